"""Causal multi-head scaled dot-product attention core with a hand-derived backward.

Layout: q, k, v, o are [B, T, H, Dh] (batch, time, head, head dim), i.e. a [B, T, E] projection
reshaped to heads without a transpose; score/probability blocks are [B, H, Tq, Tk]. The einsums let
XLA pick the batched-matmul layouts.

Causal block skipping: queries are processed in blocks of `q_block` rows; the query block
[a, b) only needs keys [0, b), so the [T, T] score matrix is never formed above the block diagonal.
For T = 512 and q_block = 128 this computes 10/16 of the full score matrix (matmuls, exp and the
backward all shrink alike). Within a block the usual -inf mask handles s > t.

matmul_dtype (keyword of attention_forward/attention_backward; None = the inputs' dtype): with
"bfloat16" the [T, T]-sized products (scores and e V; dP, dQ, dK, dV in the backward) round
their operands to bfloat16 and accumulate in the inputs' dtype; exp, max, row sums and 1/l stay in
the inputs' dtype.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_Q_BLOCK = 128


class AttentionCache(NamedTuple):
    q: jax.Array  # [B, T, H, Dh]
    k: jax.Array  # [B, T, H, Dh]
    v: jax.Array  # [B, T, H, Dh]
    e: tuple      # per query block [a, b): [B, H, b - a, b] unnormalised exp(S - rowmax), 0 above diag
    inv: tuple    # per query block: [B, b - a, H, 1] 1 / (row sum of e)
    o: jax.Array  # [B, T, H, Dh] the output


def _mm(spec: str, a: jax.Array, b: jax.Array, md: str | None) -> jax.Array:
    if md is None:
        return jnp.einsum(spec, a, b)
    return jnp.einsum(spec, a.astype(md), b.astype(md), preferred_element_type=jnp.result_type(a, b))


def causal_mask(t: int) -> jax.Array:
    """[T, T] boolean, True where key position s <= query position t."""
    return jnp.tril(jnp.ones((t, t), dtype=bool))


def query_blocks(t: int, q_block: int | None = DEFAULT_Q_BLOCK) -> list[tuple[int, int]]:
    """[(a, b), ...] covering [0, t) in steps of q_block (one block if q_block is None)."""
    qb = t if not q_block else int(q_block)
    return [(a, min(a + qb, t)) for a in range(0, t, qb)]


def attention_forward(q_BxTxHxD: jax.Array, k_BxTxHxD: jax.Array, v_BxTxHxD: jax.Array,
                      q_block: int | None = DEFAULT_Q_BLOCK, matmul_dtype: str | None = None
                      ) -> tuple[jax.Array, AttentionCache]:
    """o_t = sum_{s<=t} p_ts v_s with p_t = softmax_s(q_t . k_s / sqrt(Dh)) over s <= t, per head.

    Computed as e_ts = exp(S_ts - max_s S_ts) (0 for s > t), l_t = sum_s e_ts,
    o_t = (sum_s e_ts v_s) / l_t: the normalised P = e / l is never written out (one pass over the
    [T, T] scores less, here and in the backward).

    Args:
      q, k, v: [B, T, H, Dh] queries, keys and values.
      q_block: query rows per block for causal block skipping (None: one [T, T] block).
      matmul_dtype: None or "bfloat16" operands of the two matmuls (module doc).

    Returns:
      (o [B, T, H, Dh], AttentionCache).
    """
    t, dh = q_BxTxHxD.shape[1], q_BxTxHxD.shape[-1]
    qs = q_BxTxHxD * jnp.asarray(1.0 / dh ** 0.5, q_BxTxHxD.dtype)
    es, invs, os = [], [], []
    for a, b in query_blocks(t, q_block):
        s = _mm("bthd,bshd->bhts", qs[:, a:b], k_BxTxHxD[:, :b], matmul_dtype)
        mask = jnp.arange(b)[None, :] <= jnp.arange(a, b)[:, None]
        s = jnp.where(mask[None, None], s, -jnp.inf)
        e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))  # the diagonal is present: max finite
        inv = jnp.swapaxes(1.0 / jnp.sum(e, axis=-1), 1, 2)[..., None]  # [B, Tq, H, 1]
        es.append(e)
        invs.append(inv)
        os.append(_mm("bhts,bshd->bthd", e, v_BxTxHxD[:, :b], matmul_dtype) * inv)
    o = jnp.concatenate(os, axis=1) if len(os) > 1 else os[0]
    return o, AttentionCache(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, tuple(es), tuple(invs), o)


def attention_probs(cache: AttentionCache) -> tuple:
    """The probability blocks P = e / l, [B, H, Tq, b] each (for inspection and tests)."""
    return tuple(e * jnp.swapaxes(inv[..., 0], 1, 2)[..., None] for e, inv in zip(cache.e, cache.inv))


def attention_backward(cache: AttentionCache, do_BxTxHxD: jax.Array,
                       matmul_dtype: str | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward of the causal attention core, per batch b and head h (indices t: query, s: key).

    Forward: S_ts = c q_t . k_s (c = 1/sqrt(Dh)), P_t = softmax over s <= t of S_t (P_ts = 0 for
    s > t), o_t = sum_s P_ts v_s, with P_ts = e_ts / l_t as cached.

    - o is linear in v and P:  dv_s = sum_t P_ts do_t  (dV = P^T dO)  and  dP_ts = do_t . v_s.
    - softmax: dS_ts = P_ts (dP_ts - sum_s' P_ts' dP_ts'). The row sum simplifies to
      sum_s' P_ts' (do_t . v_s') = do_t . o_t, a [T]-vector per head instead of a [T, T] reduction.
      Masked entries have P_ts = 0, hence dS_ts = 0: the mask needs no separate backward.
    - S is bilinear in q and k:  dq_t = c sum_s dS_ts k_s  (dQ = c dS K),  dk_s = c sum_t dS_ts q_t
      (dK = c dS^T Q).

    Folding 1/l_t into the small [T, Dh] side, g_t = do_t / l_t:
      dv = e^T g,   dS_ts = e_ts (g_t . v_s - g_t . o_t),
    so the [T, T] work is two matmuls producing/consuming e-sized blocks and one fused pass.

    With query blocks [a, b) the same formulas hold block by block: a block's dq rows are complete,
    while its dk, dv contributions cover keys [0, b) and are summed over the blocks.

    Returns:
      (dq, dk, dv), each [B, T, H, Dh].
    """
    q, k, v, es, invs, o = cache
    c = jnp.asarray(1.0 / q.shape[-1] ** 0.5, q.dtype)
    dqs, dk, dv = [], jnp.zeros_like(k), jnp.zeros_like(v)
    a = 0
    for e, inv in zip(es, invs):
        b = a + e.shape[2]
        g = do_BxTxHxD[:, a:b] * inv                                   # do_t / l_t
        row = jnp.einsum("bthd,bthd->bht", g, o[:, a:b])[..., None]   # g_t . o_t
        dp = _mm("bthd,bshd->bhts", g, v[:, :b], matmul_dtype)
        ds = e * (dp - row) * c
        dqs.append(_mm("bhts,bshd->bthd", ds, k[:, :b], matmul_dtype))
        dk = dk.at[:, :b].add(_mm("bhts,bthd->bshd", ds, q[:, a:b], matmul_dtype))
        dv = dv.at[:, :b].add(_mm("bhts,bthd->bshd", e, g, matmul_dtype))
        a = b
    dq = jnp.concatenate(dqs, axis=1) if len(dqs) > 1 else dqs[0]
    return dq, dk, dv
