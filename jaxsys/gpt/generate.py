"""Jitted batched generation with a preallocated KV cache.

Every row of a batch is a request: its prompt followed by the tokens generated so far live in one
`[B, T + 1]` buffer (T = block_size; as in the reference, the token sampled after position T - 1 is
still emitted, it is just never fed back). One decode step feeds, for every active row, the token at that row's
position `pos` and writes its keys/values into the cache at `pos`, so rows with different prompt
lengths and rows that joined the batch at different times advance together with static shapes. The
loop is a `lax.while_loop`. A new row's prompt, all but its last token, is fed first in one causal
pass (`prefill_row`, compiled per power-of-two prompt length); a prompt can also simply be fed token
by token (teacher forced) through the decode step, with the same result.

Sampling follows the convention shared with the float64 numpy inference model
(`jaxsys.gpt.inference`): probs = softmax(logits / temperature), computed as exp(max(z, -80)) / sum
with z = (logits - max(logits)) / temperature so that no temperature > 0 overflows or gives NaN;
with one uniform u per generated token, token = min(searchsorted(cumsum(probs), u, side="right"),
V - 1); greedy = argmax where temperature < MIN_TEMPERATURE (0 included). The uniforms of a row with
seed s are `np.random.default_rng(s).random(n)` drawn on the host, so the same seed gives the same
tokens here and in the numpy model (exactly in float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.config import GPTConfig

RMS_EPS = 1e-5
# Below this temperature sampling is argmax: softmax(l / t) is one-hot to float32 precision for any
# logit gap above 1e-4 there, and argmax is exact where the division would underflow or overflow.
MIN_TEMPERATURE = 1e-6
EXP_FLOOR = -80.0  # z below this has exp(z) < 2e-35: clipped so exp never sees a huge negative input


class DecodeState(NamedTuple):
    """Per-row control state of a decode batch (B rows, T = block_size, U uniforms per row)."""

    tokens: jax.Array  # [B, T + 1] int32: prompt, then generated tokens
    prompt_len: jax.Array  # [B] int32: prompt length (>= 1)
    pos: jax.Array  # [B] int32: position of the token fed at the next step
    n_gen: jax.Array  # [B] int32: tokens generated so far (incl. a final stop token)
    max_new: jax.Array  # [B] int32: generation budget
    done: jax.Array  # [B] bool: finished (or an idle slot)
    temperature: jax.Array  # [B] float: <= 0 means greedy
    uniforms: jax.Array  # [B, U] float: the k-th generated token uses uniforms[:, k]
    stop: jax.Array  # [B, V] bool: token ids that end the row


# KV cache: one (k, v) pair per layer, each [B, n_head, T, head_dim].
KVCache = tuple


def init_kv(cfg: GPTConfig, batch: int, dtype=jnp.float32) -> KVCache:
    shape = (batch, cfg.n_head, cfg.block_size, cfg.head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.n_layer))


def _rmsnorm(x):
    return x * lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + RMS_EPS)


def _qkv(params: dict, p: str, h, n: int, cfg: GPTConfig):
    """Layer p's queries, keys and values of n rows h [n, C], each [n, n_head, head_dim]."""
    return tuple((h @ params[p + f"attn_w{c}"].T).reshape(n, cfg.n_head, cfg.head_dim) for c in "qkv")


def _mlp_residual(params: dict, p: str, x):
    """x + fc2(relu(fc1(rmsnorm(x)))) of layer p."""
    return x + jax.nn.relu(_rmsnorm(x) @ params[p + "mlp_fc1"].T) @ params[p + "mlp_fc2"].T


def decode_step(params: dict, kv: KVCache, tok_B, pos_B, cfg: GPTConfig, attn_len: int | None = None):
    """Feed one token per row at that row's position; returns (logits_BxV, updated cache).

    x = rmsnorm(wte[tok] + wpe[pos]); per layer x += wo(attn(rmsnorm(x))) with keys/values of
    positions <= pos from the cache, then x += fc2(relu(fc1(rmsnorm(x)))); logits = lm_head x.
    Attention reads only the first `attn_len` cache positions (static; every active row needs
    pos < attn_len): reading the whole block_size cache every step dominates the cost otherwise.
    """
    x = _rmsnorm(params["wte"][tok_B] + params["wpe"][pos_B])
    new_kv = []
    for i in range(cfg.n_layer):
        x, kv_i = decode_layer(params, f"layer{i}.", kv[i], x, pos_B, cfg, attn_len)
        new_kv.append(kv_i)
    return x @ params["lm_head"].T, tuple(new_kv)


def decode_layer(params: dict, p: str, kv_layer, x_BxC, pos_B, cfg: GPTConfig, attn_len: int | None = None):
    """One layer of `decode_step` (parameters `p + name`, e.g. p = "layer0."): rows x_BxC at positions
    pos_B, with that layer's cache (k, v) each [B, n_head, T, head_dim]; returns (x, (k, v))."""
    B = x_BxC.shape[0]
    H, D = cfg.n_head, cfg.head_dim
    A = cfg.block_size if attn_len is None else attn_len
    rows = jnp.arange(B)
    visible_BxT = jnp.arange(A)[None, :] <= pos_B[:, None]
    ck, cv = kv_layer
    q, k, v = _qkv(params, p, _rmsnorm(x_BxC), B, cfg)
    ck = ck.at[rows, :, pos_B, :].set(k.astype(ck.dtype))
    cv = cv.at[rows, :, pos_B, :].set(v.astype(cv.dtype))
    s = jnp.einsum("bhd,bhtd->bht", q, ck[:, :, :A]) / math.sqrt(D)
    s = jnp.where(visible_BxT[:, None, :], s, -jnp.inf)
    a = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bht,bhtd->bhd", a, cv[:, :, :A]).reshape(B, H * D)
    return _mlp_residual(params, p, x_BxC + o @ params[p + "attn_wo"].T), (ck, cv)


def _prefill(params: dict, kv: KVCache, tok_L, row, cfg: GPTConfig, length: int) -> KVCache:
    """Keys and values of one row's first `length` positions from its tokens tok_L [length] in one
    causal pass (the same maths as `length` decode steps), written into that row of the cache.
    Positions past the real prompt hold values of pad tokens; they are never read, because a decode
    step writes position p before it attends to it."""
    H, D = cfg.n_head, cfg.head_dim
    x = _rmsnorm(params["wte"][tok_L] + params["wpe"][:length])
    causal = jnp.tril(jnp.ones((length, length), bool))
    new_kv = []
    for i in range(cfg.n_layer):
        p = f"layer{i}."
        ck, cv = kv[i]
        q, k, v = _qkv(params, p, _rmsnorm(x), length, cfg)
        zero = jnp.zeros((), row.dtype)
        start = (row, zero, zero, zero)
        ck = lax.dynamic_update_slice(ck, jnp.transpose(k, (1, 0, 2))[None].astype(ck.dtype), start)
        cv = lax.dynamic_update_slice(cv, jnp.transpose(v, (1, 0, 2))[None].astype(cv.dtype), start)
        new_kv.append((ck, cv))
        if i == cfg.n_layer - 1:
            break  # the last layer's output is not needed for any cached key or value
        s = jnp.einsum("lhd,mhd->hlm", q, k) / math.sqrt(D)
        a = jax.nn.softmax(jnp.where(causal[None], s, -jnp.inf), axis=-1)
        o = jnp.einsum("hlm,mhd->lhd", a, v).reshape(length, H * D)
        x = _mlp_residual(params, p, x + o @ params[p + "attn_wo"].T)
    return tuple(new_kv)


prefill = jax.jit(_prefill, static_argnames=("cfg", "length"), donate_argnames=("kv",))


def _buckets(first: int, block_size: int) -> list[int]:
    """first, 2 first, 4 first, ... below block_size, then block_size (few compiled shapes)."""
    out, n = [], first
    while n < block_size:
        out.append(n)
        n *= 2
    return out + [block_size]


def prefill_buckets(cfg: GPTConfig) -> list[int]:
    """Prompt lengths compiled for by `prefill_row`: 16, 32, ... below block_size, then block_size."""
    return _buckets(16, cfg.block_size)


def prefill_row(params: dict, kv: KVCache, hs: HostState, row: int, cfg: GPTConfig) -> KVCache:
    """Feed a freshly placed row's prompt, all but its last token, in one pass (instead of one decode
    step per token); the row then continues at its last prompt token as if it had been fed one by
    one. Rows with a one-token prompt, or already under way, are left as they are."""
    n = int(hs.prompt_len[row])
    if n < 2 or int(hs.pos[row]) != 0:
        return kv
    length = next(b for b in prefill_buckets(cfg) if b >= n - 1)
    tok = np.zeros(length, np.int32)
    tok[: n - 1] = hs.tokens[row, : n - 1]
    kv = prefill(params, kv, jnp.asarray(tok), jnp.int32(row), cfg=cfg, length=length)
    hs.pos[row] = n - 1
    return kv


def sampling_probs(logits_BxV, temperature_B):
    """softmax(logits / t) per row, valid (finite, sums to 1) for every t > 0: the logits are shifted
    by their max before the division, and exp's argument is clipped at EXP_FLOOR. Rows with
    t < MIN_TEMPERATURE get t = 1 here (they take the argmax in `sample_tokens`)."""
    t = jnp.where(temperature_B < MIN_TEMPERATURE, 1.0, temperature_B).astype(logits_BxV.dtype)
    z = (logits_BxV - jnp.max(logits_BxV, axis=-1, keepdims=True)) / t[:, None]
    e = jnp.exp(jnp.maximum(z, EXP_FLOOR))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def sample_tokens(logits_BxV, temperature_B, u_B):
    """Shared sampling convention: inverse-CDF with `u`, or argmax where temperature < MIN_TEMPERATURE."""
    V = logits_BxV.shape[-1]
    greedy = temperature_B < MIN_TEMPERATURE
    cdf = jnp.cumsum(sampling_probs(logits_BxV, temperature_B), axis=-1)
    # searchsorted(cdf, u, side="right") == number of cdf entries <= u (cdf is non-decreasing)
    idx = jnp.sum(cdf <= u_B[:, None].astype(cdf.dtype), axis=-1)
    sampled = jnp.minimum(idx, V - 1)
    return jnp.where(greedy, jnp.argmax(logits_BxV, axis=-1), sampled).astype(jnp.int32)


def _step(params, kv, st: DecodeState, cfg: GPTConfig, attn_len: int):
    B, T1 = st.tokens.shape  # T1 = block_size + 1
    U = st.uniforms.shape[1]
    rows = jnp.arange(B)
    active = ~st.done
    feed_pos = jnp.minimum(st.pos, T1 - 2)  # finished rows sit at pos = block_size
    logits, kv = decode_step(params, kv, st.tokens[rows, feed_pos], feed_pos, cfg, attn_len)
    nxt = jnp.minimum(st.pos + 1, T1 - 1)
    sampling = active & (st.pos + 1 >= st.prompt_len)
    u = st.uniforms[rows, jnp.minimum(st.n_gen, U - 1)]
    new_tok = sample_tokens(logits, st.temperature, u)
    old = st.tokens[rows, nxt]
    tokens = st.tokens.at[rows, nxt].set(jnp.where(sampling, new_tok, old))
    n_gen = st.n_gen + sampling.astype(jnp.int32)
    finished = sampling & (st.stop[rows, new_tok] | (n_gen >= st.max_new) | (nxt >= T1 - 1))
    return kv, st._replace(tokens=tokens, pos=jnp.where(active, nxt, st.pos), n_gen=n_gen, done=st.done | finished)


def _advance(params, kv, st: DecodeState, max_steps, cfg: GPTConfig, attn_len: int):
    """Run decode steps until every row is done or `max_steps` steps have run (a traced int).

    `attn_len` (static, see `attn_bucket`) must exceed every position an active row feeds."""

    def cond(c):
        i, _, s = c
        return (i < max_steps) & jnp.any(~s.done)

    def body(c):
        i, kv_, s = c
        kv_, s = _step(params, kv_, s, cfg, attn_len)
        return i + 1, kv_, s

    _, kv, st = lax.while_loop(cond, body, (jnp.int32(0), kv, st))
    return kv, st


advance = jax.jit(_advance, static_argnames=("cfg", "attn_len"), donate_argnames=("kv",))


def attn_buckets(cfg: GPTConfig) -> list[int]:
    """Attention lengths compiled for: 64, 128, ... below block_size, then block_size."""
    return _buckets(64, cfg.block_size)


def attn_bucket(cfg: GPTConfig, need: int) -> int:
    """The smallest bucket >= need (positions 0..need-1 are attended)."""
    return next(b for b in attn_buckets(cfg) if b >= min(need, cfg.block_size))


# ---------------------------------------------------------------------------------------------
# host side


def to_device_params(params: dict, dtype=jnp.float32) -> dict:
    """Params as jax arrays of `dtype` (arrays already on device with that dtype are kept)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, jax.Array) and v.dtype == jnp.dtype(dtype):
            out[k] = v
        else:
            out[k] = jnp.asarray(np.asarray(v), dtype=dtype)
    return out


def default_uniforms(seed: int, n: int) -> np.ndarray:
    """The uniform draws of the shared convention: one `default_rng(seed).random()` per token."""
    return np.random.default_rng(seed).random(n)


def _check_prompt(prompt: Sequence[int], cfg: GPTConfig, where: str) -> list[int]:
    ids = [int(t) for t in prompt]
    if not ids:
        raise DataError(f"{where}: the prompt is empty (it needs at least the BOS token)")
    if len(ids) > cfg.block_size:
        raise ConfigError(f"{where}: prompt of {len(ids)} tokens is longer than block_size={cfg.block_size}")
    bad = [t for t in ids if not 0 <= t < cfg.vocab_size]
    if bad:
        raise DataError(f"{where}: token id {bad[0]} is outside the vocabulary [0, {cfg.vocab_size})")
    return ids


def room(cfg: GPTConfig, prompt_len: int) -> int:
    """Most tokens that can follow a prompt: positions prompt_len - 1 .. block_size - 1 each emit one."""
    return cfg.block_size + 1 - prompt_len


class HostState:
    """Numpy mirror of a DecodeState with helpers to place requests into rows (slots)."""

    def __init__(self, cfg: GPTConfig, batch: int, float_dtype=np.float32):
        T, V = cfg.block_size, cfg.vocab_size
        self.cfg = cfg
        self.tokens = np.zeros((batch, T + 1), np.int32)
        self.prompt_len = np.ones(batch, np.int32)
        self.pos = np.zeros(batch, np.int32)
        self.n_gen = np.zeros(batch, np.int32)
        self.max_new = np.ones(batch, np.int32)
        self.done = np.ones(batch, bool)
        self.temperature = np.zeros(batch, float_dtype)
        self.uniforms = np.zeros((batch, T), float_dtype)
        self.stop = np.zeros((batch, V), bool)

    def place(
        self,
        row: int,
        prompt: list[int],
        max_new: int,
        temperature: float,
        uniforms: np.ndarray,
        stop_ids: Sequence[int],
    ) -> None:
        T = self.cfg.block_size
        n = len(prompt)
        self.tokens[row] = 0
        self.tokens[row, :n] = prompt
        self.prompt_len[row] = n
        self.pos[row] = 0
        self.n_gen[row] = 0
        self.max_new[row] = max(1, min(int(max_new), room(self.cfg, n)))
        self.done[row] = False
        self.temperature[row] = temperature
        self.uniforms[row] = 0
        u = np.asarray(uniforms, dtype=np.float64)[:T]
        self.uniforms[row, : len(u)] = u
        self.stop[row] = False
        self.stop[row, list(stop_ids)] = True

    def to_device(self) -> DecodeState:
        return DecodeState(
            *(
                jnp.asarray(a)
                for a in (
                    self.tokens,
                    self.prompt_len,
                    self.pos,
                    self.n_gen,
                    self.max_new,
                    self.done,
                    self.temperature,
                    self.uniforms,
                    self.stop,
                )
            )
        )

    def update_from(self, st: DecodeState) -> None:
        """Copy back what a decode chunk changes (tokens, positions, counts, done flags)."""
        got = jax.device_get((st.tokens, st.pos, st.n_gen, st.done))
        self.tokens, self.pos, self.n_gen, self.done = (np.array(a) for a in got)

    def generated(self, row: int) -> list[int]:
        n = int(self.prompt_len[row])
        return self.tokens[row, n : n + int(self.n_gen[row])].tolist()


class Generation(NamedTuple):
    tokens: list[int]  # generated tokens, without the stop token
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens or block_size reached)


def finish_reason(gen: list[int], stop_ids: Sequence[int]) -> Generation:
    if gen and gen[-1] in set(stop_ids):
        return Generation(gen[:-1], "stop")
    return Generation(gen, "length")


def generate_batch(
    params: dict,
    cfg: GPTConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.5,
    seeds: int | Sequence[int] = 42,
    stop_ids=(),
    uniforms: Sequence[np.ndarray] | None = None,
    greedy: bool = False,
    dtype=jnp.float32,
    prefill: bool = True,
) -> list[Generation]:
    """Generate for several prompts at once (one jitted while_loop over a padded batch).

    Args:
      params: name -> array (numpy or jax); converted to `dtype` (use float64 with x64 for parity).
      prompts: token-id lists of any lengths in [1, block_size].
      max_new_tokens: budget per row (also capped by room(cfg, len(prompt))).
      seeds: one seed, or one per prompt; row b draws `default_rng(seeds[b]).random(...)`.
      uniforms: explicit uniform draws per row (overrides seeds), for parity tests.
      greedy: argmax instead of sampling (also when temperature <= 0).
      prefill: feed each prompt in one causal pass (prefill_row); False feeds it token by token
        through the decode loop (same tokens; experiments/bench_prefill.py compares the two).
    Returns:
      one Generation per prompt (tokens without the stop token, and why it ended).
    """
    if not prompts:
        return []
    if isinstance(max_new_tokens, bool) or int(max_new_tokens) < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if not greedy and not temperature > 0:
        raise ConfigError(f"temperature must be > 0 for sampling (or pass greedy=True), got {temperature}")
    n = len(prompts)
    checked = [_check_prompt(p, cfg, f"prompt {b}") for b, p in enumerate(prompts)]
    seeds = [seeds] * n if isinstance(seeds, (int, np.integer)) else list(seeds)
    if len(seeds) != n:
        raise ConfigError(f"got {len(seeds)} seeds for {n} prompts")
    if uniforms is not None and len(uniforms) != n:
        raise ConfigError(f"got {len(uniforms)} uniform arrays for {n} prompts")
    B = 1 << (n - 1).bit_length()  # pad the batch to a power of two: few compiled shapes
    np_float = np.float64 if jnp.dtype(dtype) == jnp.float64 else np.float32
    hs = HostState(cfg, B, np_float)
    T = cfg.block_size
    for b, p in enumerate(checked):
        u = default_uniforms(int(seeds[b]), T) if uniforms is None else np.asarray(uniforms[b])
        hs.place(b, p, max_new_tokens, 0.0 if greedy else float(temperature), u, stop_ids)
    dev_params = to_device_params(params, dtype)
    kv = init_kv(cfg, B, dtype)
    for b in range(n if prefill else 0):
        kv = prefill_row(dev_params, kv, hs, b, cfg)
    # fed positions stay below len(prompt) + max_new - 1
    need = max(len(p) + int(hs.max_new[b]) - 1 for b, p in enumerate(checked))
    kv, st = advance(dev_params, kv, hs.to_device(), jnp.int32(T + 1), cfg=cfg, attn_len=attn_bucket(cfg, need))
    hs.update_from(st)
    return [finish_reason(hs.generated(b), stop_ids) for b in range(n)]


def generate(
    params: dict,
    cfg: GPTConfig,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.5,
    seed: int = 42,
    stop_ids=(),
    uniforms=None,
    greedy: bool = False,
    dtype=jnp.float32,
) -> list[int]:
    """One prompt; returns the generated tokens without the stop token."""
    return generate_batch(
        params,
        cfg,
        [prompt_ids],
        max_new_tokens,
        temperature,
        seed,
        stop_ids,
        None if uniforms is None else [uniforms],
        greedy,
        dtype,
    )[0].tokens
