"""Tensor sources for `jaxsys codec compress` and back: .npy, .npz, .safetensors (own reader and writer,
bfloat16 included) and weights.json (a JSON object of nested lists of numbers). Every reader refuses
what is not a weights file with one clear `DataError`."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from jaxsys.codec import floats
from jaxsys.codec.index import dtype_of
from jaxsys.errors import DataError
from jaxsys.train.io import atomic_write_bytes, load_json

_ST_DTYPES = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "I8": "int8",
    "U8": "uint8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path) -> dict:
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise DataError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack_from("<Q", data, 0)
    if 8 + n > len(data):
        raise DataError(f"{path}: header length {n} exceeds the file")
    hdr = load_json(data[8 : 8 + n], f"{path}: safetensors header")
    if not isinstance(hdr, dict):
        raise DataError(f"{path}: safetensors header is not an object")
    base = 8 + n
    out = {}
    for name, meta in hdr.items():
        if name == "__metadata__":
            continue
        if not isinstance(meta, dict) or meta.get("dtype") not in _ST_DTYPES:
            raise DataError(f"{path}: tensor {name!r} has an unsupported dtype or no description")
        dt = floats.FLOAT_DTYPES.get(_ST_DTYPES[meta["dtype"]]) or np.dtype(_ST_DTYPES[meta["dtype"]])
        try:
            s, e = (int(v) for v in meta["data_offsets"])
            shape = tuple(int(v) for v in meta["shape"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: tensor {name!r} has malformed shape or offsets") from None
        if (
            min(shape, default=1) < 0
            or not 0 <= s <= e
            or base + e > len(data)
            or e - s != np.prod(shape) * dt.itemsize
        ):
            raise DataError(f"{path}: tensor {name!r} offsets {s}..{e} do not fit")
        out[name] = np.frombuffer(data[base + s : base + e], dtype=dt).reshape(shape).copy()
    return out


def write_safetensors(path, tensors: dict) -> Path:
    hdr, chunks, off = {}, [], 0
    for name, x in tensors.items():
        x = np.ascontiguousarray(x)
        if x.dtype.name not in _ST_CODES:
            raise DataError(f"tensor {name!r}: dtype {x.dtype} not storable in safetensors")
        b = x.tobytes()
        hdr[name] = {"dtype": _ST_CODES[x.dtype.name], "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    import json

    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return atomic_write_bytes(path, struct.pack("<Q", len(h)) + h + b"".join(chunks))


def _weights_json(obj, path) -> dict:
    """weights.json: an object whose leaves are numeric arrays (nested lists of numbers), nested
    objects allowed ("a/b" names). Anything else (a tokenizer.json, a meta.json) is not weights."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a weights file (a JSON object of numeric arrays expected)")
    out = {}

    def walk(prefix: str, node: dict) -> None:  # depth is bounded by load_json
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}/", v)
                continue
            try:
                arr = np.asarray(v) if isinstance(v, list) else None
            except ValueError:
                arr = None
            if arr is None or arr.dtype.kind not in "fi" or arr.size == 0:
                raise DataError(f"{path}: not a weights file: {prefix}{k!s} is not a non-empty numeric array")
            out[f"{prefix}{k}"] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr

    walk("", obj)
    return out


def _npy(path, load):
    try:
        return load()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read as {path.suffix} (pickled objects are refused): {e}") from None


def load_tensors(path) -> dict:
    """Read tensors from .npy, .npz, .safetensors or a weights.json (JSON object of numeric arrays)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    suf = path.suffix.lower()
    if suf == ".npy":
        out = {path.stem: _npy(path, lambda: np.load(path, allow_pickle=False))}
    elif suf == ".npz":

        def read():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        out = _npy(path, read)
    elif suf == ".safetensors":
        out = read_safetensors(path)
    elif suf == ".json":
        out = _weights_json(load_json(path, str(path)), path)
    else:
        raise DataError(f"{path}: unsupported input type {suf!r} (use .npy, .npz, .safetensors, .json)")
    if not out:
        raise DataError(f"{path}: holds no tensors")
    for k, v in out.items():
        if v.size == 0:
            raise DataError(f"{path}: tensor {k!r} is empty (shape {v.shape})")
        dtype_of(v.dtype.name)  # numeric only
    return out
