"""weights.json + meta.json (the microgpt formats) and safetensors export.

meta.json: {"vocab_size", "n_embd", "n_head", "n_layer", "block_size", "chars": [single chars],
            "special_tokens": ["user", "assistant", "end_turn"] (chat mode only)}
weights.json: {parameter name: [[row], ...]} with rows = out, cols = in.
Both are written atomically. Loading reads both through `jaxsys.train.io.load_json` (bounded size,
depth and number length) and checks the sizes in meta.json against SIZE_LIMITS and against the
weights file's byte size before parsing or allocating anything; every problem is a DataError naming it.
"""

import json
import math
from pathlib import Path

import numpy as np

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.train.io import JSON_MAX_BYTES, atomic_write_bytes, atomic_write_text, load_json

WEIGHTS_FILE = "weights.json"
META_FILE = "meta.json"
CONFIG_FIELDS = ("vocab_size", "n_embd", "n_head", "n_layer", "block_size")
# Largest sizes a meta.json may claim: far beyond any model a weights.json can hold, small enough that
# the shape table and the checks below cost nothing.
SIZE_LIMITS = {"vocab_size": 1 << 21, "n_embd": 1 << 16, "n_head": 1 << 10, "n_layer": 1 << 10, "block_size": 1 << 20}
META_MAX_BYTES = 64 << 20  # meta.json holds the config and the character list
MIN_BYTES_PER_WEIGHT = 2  # a weights.json number is at least one digit and one separator


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, int]]:
    """Name -> shape in weights.json order (same table as jaxsys.gpt.model.param_shapes)."""
    e, v = cfg.n_embd, cfg.vocab_size
    shapes = {"wte": (v, e), "wpe": (cfg.block_size, e), "lm_head": (v, e)}
    for i in range(cfg.n_layer):
        for m, s in (
            ("attn_wq", (e, e)),
            ("attn_wk", (e, e)),
            ("attn_wv", (e, e)),
            ("attn_wo", (e, e)),
            ("mlp_fc1", (4 * e, e)),
            ("mlp_fc2", (e, 4 * e)),
        ):
            shapes[f"layer{i}.{m}"] = s
    return shapes


def _check_params(params: dict, cfg: GPTConfig, where: str) -> dict[str, np.ndarray]:
    shapes = expected_shapes(cfg)
    out = {}
    for name, shape in shapes.items():
        if name not in params:
            raise DataError(f"{where}: matrix {name!r} is missing (config n_layer={cfg.n_layer})")
        a = np.asarray(params[name], np.float64)
        if a.shape != shape:
            raise DataError(
                f"{where}: matrix {name!r} has shape {list(a.shape)}, expected "
                f"{list(shape)} from the config ({_cfg_str(cfg)})"
            )
        if not np.all(np.isfinite(a)):
            raise DataError(f"{where}: matrix {name!r} contains non-finite values")
        out[name] = a
    extra = sorted(set(params) - set(shapes))
    if extra:
        raise DataError(
            f"{where}: unexpected matrices {extra[:5]} not in the config ({_cfg_str(cfg)}): meta/weights mismatch"
        )
    return out


def _cfg_str(cfg: GPTConfig) -> str:
    return ", ".join(f"{k}={getattr(cfg, k)}" for k in CONFIG_FIELDS)


def save_model(out_dir, params: dict, cfg: GPTConfig, tok: Tokenizer) -> tuple[Path, Path]:
    """Write out_dir/weights.json and out_dir/meta.json atomically; returns their paths."""
    out_dir = Path(out_dir)
    meta = tok.to_meta(cfg)
    arrays = _check_params({k: np.asarray(v) for k, v in params.items()}, cfg, "save_model")
    weights = {k: arrays[k].tolist() for k in expected_shapes(cfg)}
    wpath = atomic_write_text(out_dir / WEIGHTS_FILE, json.dumps(weights, separators=(",", ":")))
    mpath = atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return wpath, mpath


def _read_json(path: Path, max_bytes: int = JSON_MAX_BYTES):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return load_json(path, str(path), max_bytes=max_bytes)


def param_count(cfg: GPTConfig) -> int:
    """Numbers in a weights.json of this config (without building the shape table)."""
    e, v = cfg.n_embd, cfg.vocab_size
    return 2 * v * e + cfg.block_size * e + cfg.n_layer * 12 * e * e


def config_from_meta(meta, where: str = META_FILE) -> GPTConfig:
    if not isinstance(meta, dict):
        raise DataError(f"{where}: must hold a JSON object, got {type(meta).__name__}")
    vals = {}
    for k in CONFIG_FIELDS:
        if k not in meta:
            raise DataError(f"{where}: field {k!r} is missing")
        v = meta[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{where}: field {k!r} must be a positive integer, got {v!r}")
        if v > SIZE_LIMITS[k]:
            raise DataError(f"{where}: {k}={v} is out of range (at most {SIZE_LIMITS[k]})")
        vals[k] = v
    try:
        cfg = GPTConfig(**vals)
    except ConfigError as e:
        raise DataError(f"{where}: {e}") from None
    return cfg


def _matrix(name: str, rows, where: str) -> np.ndarray:
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise DataError(f"{where}: matrix {name!r} must be a non-empty list of rows (lists of numbers)")
    n = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != n:
            raise DataError(f"{where}: matrix {name!r} is ragged: row {i} has {len(r)} values, row 0 has {n}")
        for j, x in enumerate(r):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise DataError(f"{where}: matrix {name!r} entry [{i}][{j}] is not a finite number: {x!r}")
    return np.array(rows, dtype=np.float64).reshape(len(rows), n)


def load_model(model_dir) -> tuple[dict[str, np.ndarray], GPTConfig, Tokenizer]:
    """Read and validate model_dir/{weights.json, meta.json} -> (float64 params, config, tokenizer)."""
    model_dir = Path(model_dir)
    mpath, wpath = model_dir / META_FILE, model_dir / WEIGHTS_FILE
    meta = _read_json(mpath, META_MAX_BYTES)
    cfg = config_from_meta(meta, str(mpath))
    try:
        tok = Tokenizer.from_meta(meta)
    except DataError as e:
        raise DataError(f"{mpath}: {e}") from None
    if tok.vocab_size != cfg.vocab_size:
        raise DataError(f"{mpath}: vocab_size={cfg.vocab_size} does not match chars/special tokens ({tok.vocab_size})")
    if not wpath.is_file():
        raise DataError(f"{wpath}: file not found")
    size, need = wpath.stat().st_size, param_count(cfg)
    if size < MIN_BYTES_PER_WEIGHT * need:
        raise DataError(
            f"{wpath}: weights.json of {size} bytes cannot hold the {need} numbers that meta.json "
            f"describes ({_cfg_str(cfg)}): meta/weights mismatch"
        )
    weights = _read_json(wpath)
    if not isinstance(weights, dict):
        raise DataError(f"{wpath}: must hold an object from parameter name to rows, got {type(weights).__name__}")
    shapes = expected_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        if name not in weights:
            raise DataError(f"{wpath}: matrix {name!r} is missing (meta.json says n_layer={cfg.n_layer})")
        a = _matrix(name, weights[name], str(wpath))
        if a.shape != shape:
            raise DataError(
                f"{wpath}: matrix {name!r} has shape {list(a.shape)}, expected "
                f"{list(shape)} from meta.json ({_cfg_str(cfg)}): meta/weights mismatch"
            )
        params[name] = a
    extra = sorted(set(weights) - set(shapes))
    if extra:
        raise DataError(
            f"{wpath}: unexpected matrices {extra[:5]} not described by meta.json "
            f"({_cfg_str(cfg)}): meta/weights mismatch"
        )
    return params, cfg, tok


def save_safetensors(path, params: dict, metadata: dict | None = None) -> Path:
    """params (name -> 2-D array) as a safetensors file, written atomically; dtype kept."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(np.asarray(v)) for k, v in params.items()}
    meta = None if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_safetensors(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return dict(load(path.read_bytes()))
    except Exception as e:  # safetensors raises its own error types
        raise DataError(f"{path}: not a valid safetensors file ({e})") from None
