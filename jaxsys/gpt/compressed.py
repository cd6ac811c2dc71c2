"""Compressed inference for the jaxsys GPT: weights stay rANS-compressed on the device and each layer
is decoded when the forward pass reaches it (the codec's `jaxsys.codec.params` API), into a bounded
LRU cache, with the next layer's decode issued before the current layer's compute (prefetch) and
optionally fused with it (one jitted decode + layer step).

Groups (the unit of caching): "embed" (wte, wpe), "layer{i}" (the six matrices), "head" (lm_head).
Each layer is `jaxsys.gpt.generate.decode_layer` (the decode engine's own layer) and the embedding
norm is `jaxsys.nn.rmsnorm`; `GPTRunner` runs them from a plain params dict (the uncompressed
baseline) or from a `WeightCache` (compressed), through the same jitted functions, so both give
identical logits and tokens for identical weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.codec import params as cp
from jaxsys.errors import ConfigError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.generate import decode_layer, sample_tokens
from jaxsys.gpt.model import LAYER_MATRICES
from jaxsys.nn.rmsnorm import rmsnorm_forward

second_cpu_device = cp.second_cpu_device


def groups_for(cfg: GPTConfig) -> dict[str, list[str]]:
    g = {"embed": ["wte", "wpe"]}
    for i in range(cfg.n_layer):
        g[f"layer{i}"] = [f"layer{i}.{m}" for m in LAYER_MATRICES]
    g["head"] = ["lm_head"]
    return g


def _embed(wte, wpe, tok_B, pos):
    return rmsnorm_forward(wte[tok_B] + wpe[pos][None, :])[0]


def _layer(ws, ck, cv, x, pos, cfg: GPTConfig):
    """The decode engine's layer for B rows at one position: ws the six matrices (LAYER_MATRICES
    order), x [B, E], ck/cv [B, H, T, D]."""
    pos_B = jnp.full((x.shape[0],), pos, jnp.int32)
    x, (ck, cv) = decode_layer(dict(zip(LAYER_MATRICES, ws)), "", (ck, cv), x, pos_B, cfg)
    return x, ck, cv


def _head(w, x, temperature, u_B):
    logits = x @ w.T
    B = logits.shape[0]
    return logits, sample_tokens(logits, jnp.full((B,), temperature), u_B)


embed_step = jax.jit(_embed)
layer_step = jax.jit(_layer, static_argnames=("cfg",), donate_argnames=("ck", "cv"))
head_step = jax.jit(_head)


def _fused(packs, scales, ck, cv, x, pos, metas, cfg: GPTConfig):
    """One jitted function: decode the six matrices of a layer, then run the layer."""
    ws, oks = [], []
    for p, s, m in zip(packs, scales, metas):
        w, ok = cp.tensor_value(p, s, m)
        ws.append(w.astype(x.dtype))
        oks.append(ok)
    x, ck, cv = _layer(tuple(ws), ck, cv, x, pos, cfg)
    return x, ck, cv, tuple(ws), jnp.all(jnp.stack(oks))


fused_layer_step = jax.jit(_fused, static_argnames=("metas", "cfg"), donate_argnames=("ck", "cv"))


def _fused_group(pack, scales, ck, cv, x, pos, meta, cfg: GPTConfig):
    """One jitted function: decode a layer's packed group (one rANS kernel), then run the layer."""
    ws, oks = cp.group_value(pack, scales, meta)
    ws = tuple(w.astype(x.dtype) for w in ws)
    x, ck, cv = _layer(ws, ck, cv, x, pos, cfg)
    return x, ck, cv, ws, jnp.all(oks)


fused_group_step = jax.jit(_fused_group, static_argnames=("meta", "cfg"), donate_argnames=("ck", "cv"))


class GPTRunner:
    """Token-by-token generation for one sequence, layer by layer.

    Args:
      cfg: the model config.
      params: name -> array for the uncompressed baseline; or None with `cache`.
      cache: a codec WeightCache over compressed device tensors (groups = groups_for(cfg)).
      prefetch: issue the next group's decode before the current group's compute.
      fused: on a cache miss, decode a layer's matrices and run it in one jitted call.
      profile: block after every decode and every compute to attribute time (slower).
    """

    def __init__(
        self,
        cfg: GPTConfig,
        params: dict | None = None,
        cache: cp.WeightCache | None = None,
        prefetch: bool = True,
        fused: bool = False,
        profile: bool = False,
    ):
        if (params is None) == (cache is None):
            raise ConfigError("GPTRunner needs exactly one of params (uncompressed) or cache (compressed)")
        self.cfg, self.cache, self.fused, self.profile = cfg, cache, fused, profile
        self.prefetch_on = prefetch and cache is not None
        self.params = (
            None if params is None else {k: jnp.asarray(np.asarray(v), jnp.float32) for k, v in params.items()}
        )
        self.order = list(groups_for(cfg))
        self.decode_s = self.compute_s = 0.0
        self.tokens_run = 0

    # weights ---------------------------------------------------------------------------------------
    def _weights(self, g: str) -> dict:
        if self.params is not None:
            return {n: self.params[n] for n in groups_for(self.cfg)[g]}
        t0 = time.perf_counter()
        w = self.cache.get(g)
        if self.profile:
            jax.block_until_ready(w)
            self.decode_s += time.perf_counter() - t0
        return w

    def _prefetch_after(self, g: str) -> None:
        if self.prefetch_on:
            nxt = self.order[(self.order.index(g) + 1) % len(self.order)]
            self.cache.prefetch(nxt)

    def _timed(self, fn, *a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        if self.profile:
            jax.block_until_ready(out)
            self.compute_s += time.perf_counter() - t0
        return out

    # one token -------------------------------------------------------------------------------------
    def step(self, kv: list, tok, pos: int, temperature: float, u):
        """One position for B rows: tok (B,) ids (or one int), u (B,) uniforms -> (logits, next ids)."""
        cfg = self.cfg
        tok = jnp.atleast_1d(jnp.asarray(tok, jnp.int32))
        u = jnp.atleast_1d(jnp.asarray(u, jnp.float32))
        w = self._weights("embed")
        self._prefetch_after("embed")
        x = self._timed(embed_step, w["wte"], w["wpe"], tok, jnp.int32(pos))
        for i in range(cfg.n_layer):
            g = f"layer{i}"
            names = groups_for(cfg)[g]
            w = self.cache.lookup(g) if (self.fused and self.cache is not None) else None
            if self.fused and self.cache is not None and w is None:
                self.cache.misses += 1
                self.cache.events.append(("fused", g))
                self._prefetch_after(g)
                dg = self.cache.packed.get(g)
                if dg is not None and tuple(dg.names) == tuple(names):
                    x, ck, cv, ws, ok = self._timed(
                        fused_group_step,
                        dg.pack,
                        dg.scales,
                        kv[i][0],
                        kv[i][1],
                        x,
                        jnp.int32(pos),
                        meta=dg.meta,
                        cfg=cfg,
                    )
                else:
                    ts = [self.cache.tensors[n] for n in names]
                    x, ck, cv, ws, ok = self._timed(
                        fused_layer_step,
                        tuple(t.packs for t in ts),
                        tuple(t.scale for t in ts),
                        kv[i][0],
                        kv[i][1],
                        x,
                        jnp.int32(pos),
                        metas=tuple(t.meta for t in ts),
                        cfg=cfg,
                    )
                self.cache.note_ok(g, ok)
                self.cache.insert(g, dict(zip(names, ws)))
            else:
                w = w if w is not None else self._weights(g)
                self._prefetch_after(g)
                ws = tuple(w[n] for n in names)
                x, ck, cv = self._timed(layer_step, ws, kv[i][0], kv[i][1], x, jnp.int32(pos), cfg=cfg)
            kv[i] = (ck, cv)
        w = self._weights("head")
        self._prefetch_after("head")
        logits, nxt = self._timed(head_step, w["lm_head"], x, jnp.float32(temperature), u)
        self.tokens_run += 1
        return logits, nxt

    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 42, stop_ids=()
    ) -> list[int]:
        """Feed the prompt, then sample (greedy when temperature <= 0) up to max_new_tokens."""
        return self.generate_batch([prompt], max_new_tokens, temperature, seed, stop_ids)[0]

    def generate_batch(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 42,
        stop_ids=(),
    ) -> list[list[int]]:
        """B rows with prompts of equal length, in lock-step; row b uses the uniforms of
        `np.random.default_rng(seed + b)` (row 0 = `generate`'s). A row's output ends at a stop id;
        the batch stops when every row has stopped or max_new_tokens are out."""
        cfg = self.cfg
        prompts = [[int(t) for t in p] for p in prompts]
        if not prompts or len({len(p) for p in prompts}) != 1:
            raise ConfigError("generate_batch needs >= 1 prompts, all of the same length")
        for prompt in prompts:
            if not prompt or len(prompt) > cfg.block_size or min(prompt) < 0 or max(prompt) >= cfg.vocab_size:
                raise ConfigError(f"prompt must hold 1..{cfg.block_size} ids in [0, {cfg.vocab_size})")
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        B, P = len(prompts), len(prompts[0])
        us = np.stack([np.random.default_rng(seed + b).random(cfg.block_size + 1) for b in range(B)])
        us = us.astype(np.float32)
        shape = (B, cfg.n_head, cfg.block_size, cfg.head_dim)
        kv = [(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)) for _ in range(cfg.n_layer)]
        seqs = np.zeros((B, cfg.block_size + 1), np.int32)
        seqs[:, :P] = prompts
        outs, done = [[] for _ in range(B)], [False] * B
        pos, n_out = 0, 0
        while pos < cfg.block_size and n_out < max_new_tokens:
            _, nxt = self.step(kv, seqs[:, pos], pos, temperature, us[:, n_out])
            pos += 1
            if pos >= P:
                nxt = np.asarray(nxt)
                seqs[:, pos] = nxt
                for b in range(B):
                    if not done[b]:
                        outs[b].append(int(nxt[b]))
                        done[b] = int(nxt[b]) in stop_ids
                n_out += 1
                if all(done):
                    break
        if self.cache is not None:
            self.cache.check()
        return outs

    def activation_bytes(self, rows: int = 1) -> int:
        cfg = self.cfg
        return rows * (2 * cfg.n_layer * cfg.n_head * cfg.block_size * cfg.head_dim * 4 + 8 * cfg.n_embd * 4)


def compress_gpt(params: dict, mode: str = "int8", opts: cp.LayerOpts = cp.LayerOpts()) -> bytes:
    """GPT params -> codec container bytes (int8: per-channel q8; lossless: float planes)."""
    return cp.compress_params({k: np.asarray(v, np.float32) for k, v in params.items()}, mode, opts=opts)


def compressed_runner(data: bytes, cfg: GPTConfig, cache_layers: int | None = None, **kw) -> GPTRunner:
    """A `CompressedModel` (keyword args as there); cache_layers None keeps every decoded group."""
    return CompressedModel(data, cfg, cache_layers, **kw)


class CompressedModel(GPTRunner):
    """A GPT whose weights stay compressed on the device.

    Args:
      data: container bytes (`compress_gpt`).
      cache_layers / cache_bytes: decoded groups kept (None: all; 0: none) / decoded bytes kept.
      prefetch, fused, profile: as in `GPTRunner`.
      prefetch_thread, pack_groups, decode_device, sync: as in `jaxsys.codec.params.open_params`
        (the fused path needs packs and activations on one device: decode_device None).
    """

    def __init__(
        self,
        data: bytes,
        cfg: GPTConfig,
        cache_layers: int | None = 1,
        cache_bytes: int | None = None,
        prefetch: bool = True,
        fused: bool = False,
        profile: bool = False,
        prefetch_thread: bool = False,
        pack_groups: bool = True,
        decode_device=None,
        sync: bool = False,
    ):
        if fused and decode_device is not None:
            raise ConfigError("fused decode+compute needs the packs on the compute device (decode_device=None)")
        cache = cp.open_params(
            data,
            groups_for(cfg),
            cache_groups=cache_layers,
            cache_bytes=cache_bytes,
            prefetch=prefetch,
            prefetch_thread=prefetch_thread,
            pack_groups=pack_groups,
            decode_device=decode_device,
            sync=sync,
        )
        super().__init__(cfg, cache=cache, prefetch=prefetch, fused=fused, profile=profile)


def decoded_params(data: bytes) -> dict:
    """The weights a compressed model runs with (q8 dequantised / lossless), decoded on the host."""
    return cp.decode_params(data)


def run_report(
    model_dir,
    cache_layers: int,
    prompt: str = "",
    max_new_tokens: int = 32,
    mode: str = "int8",
    prefetch: bool = True,
    fused: bool = False,
) -> dict:
    """Compress a trained model, generate with it and uncompressed, and account memory and time."""
    from jaxsys.gpt.weights_io import load_model

    params, cfg, tok = load_model(model_dir)
    data = compress_gpt(params, mode)
    ref_params = decoded_params(data)
    ids = tok.encode(prompt) if prompt else [0]
    base = GPTRunner(cfg, params=ref_params)
    base.generate(ids, 2)  # compile
    t0 = time.perf_counter()
    ref = base.generate(ids, max_new_tokens)
    t_base = time.perf_counter() - t0
    run = compressed_runner(data, cfg, cache_layers=cache_layers, prefetch=prefetch, fused=fused)
    run.generate(ids, 2)
    run.cache.hits = run.cache.misses = run.cache.prefetch_hits = run.cache.evictions = 0
    t0 = time.perf_counter()
    got = run.generate(ids, max_new_tokens)
    t_comp = time.perf_counter() - t0
    prof = compressed_runner(data, cfg, cache_layers=cache_layers, prefetch=False, profile=True)
    prof.generate(ids, 2)
    prof.decode_s = prof.compute_s = 0.0
    n_prof = len(prof.generate(ids, max_new_tokens))
    raw = sum(np.asarray(v, np.float32).nbytes for v in params.values())
    st = run.cache.stats()
    act = run.activation_bytes()
    return {
        "model": str(model_dir),
        "mode": mode,
        "cache_layers": cache_layers,
        "prefetch": prefetch,
        "fused": fused,
        "tokens": len(got),
        "identical_tokens": got == ref,
        "uncompressed_bytes": raw + act,
        "compressed_store_bytes": st["compressed_bytes"],
        "cache_bytes": st["cached_bytes"],
        "activation_bytes": act,
        "resident_bytes": st["compressed_bytes"] + st["cached_bytes"] + act,
        "hit_rate": st["hit_rate"],
        "cache_hit_rate": st["cache_hit_rate"],
        "tokens_per_s": len(got) / t_comp,
        "uncompressed_tokens_per_s": len(ref) / t_base,
        "decode_ms_per_token": 1e3 * prof.decode_s / max(n_prof, 1),
        "compute_ms_per_token": 1e3 * prof.compute_s / max(n_prof, 1),
        "text": tok.decode(got) if hasattr(tok, "decode") else got,
    }
