"""Causal multi-head scaled dot-product attention core with a hand-derived backward.

Layouts: `attention_forward`/`attention_backward` take q, k, v, o as [B, T, H, Dh] (batch, time,
head, head dim), i.e. a [B, T, E] projection reshaped to heads without a transpose. The work is done
by `attention_forward_hm`/`attention_backward_hm` in head-major layout [B, H, T, Dh] (the GPT
engine calls these directly): every product there is written as a plain batched
[M, K] x [K, N] matmul over the (B, H) batch (K^T, V^T and Q^T are transposed once per call, the
key-side gradients are computed transposed, dK^T = Q^T dS, dV^T = g^T e), because XLA's CPU dot
runs transposed-operand forms (dS^T Q) 2-4x slower and otherwise inserts a copy per block.
Score/probability blocks are [B, H, Tq, Tk].

Causal block skipping: queries are processed in blocks of `q_block` rows; the query block
[a, b) only needs keys [0, b), so the [T, T] score matrix is never formed above the block diagonal.
For T = 512 and q_block = 128 this computes 10/16 of the full score matrix (matmuls, exp and the
backward all shrink alike). Within a block the usual -inf mask handles s > t.

matmul_dtype (keyword of attention_forward/attention_backward; None = the inputs' dtype): with
"bfloat16" the [T, T]-sized products (scores and e V; dP, dQ, dK, dV in the backward) round
their operands to bfloat16 and accumulate in the inputs' dtype; exp, max, row sums and 1/l stay in
the inputs' dtype; e itself is rounded to bfloat16 once (the row sums l are taken over the rounded
e, so that P = e / l sums to one as used), and dS = c e (dP - g.o) is the product of the rounded e
and the rounded c (dP - g.o).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_Q_BLOCK = 128


class AttentionCache(NamedTuple):
    q: jax.Array  # [B, T, H, Dh]
    k: jax.Array  # [B, T, H, Dh]
    v: jax.Array  # [B, T, H, Dh]
    e: tuple  # per query block [a, b): [B, H, b - a, b] unnormalised exp(S - rowmax), 0 above diag
    inv: tuple  # per query block: [B, b - a, H, 1] 1 / (row sum of e)
    o: jax.Array  # [B, T, H, Dh] the output


def causal_mask(t: int) -> jax.Array:
    """[T, T] boolean, True where key position s <= query position t."""
    return jnp.tril(jnp.ones((t, t), dtype=bool))


def query_blocks(t: int, q_block: int | None = DEFAULT_Q_BLOCK) -> list[tuple[int, int]]:
    """[(a, b), ...] covering [0, t) in steps of q_block (one block if q_block is None)."""
    qb = t if not q_block else int(q_block)
    return [(a, min(a + qb, t)) for a in range(0, t, qb)]


def _cast(x: jax.Array, md: str | None) -> jax.Array:
    return x if md is None else x.astype(md)


def _nn(spec: str, a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    """Batched [.., M, K] x [.., K, N] product (both operands already in the matmul dtype)."""
    if a.dtype == out_dtype and b.dtype == out_dtype:
        return jnp.einsum(spec, a, b)
    return jnp.einsum(spec, a, b, preferred_element_type=out_dtype)


class HeadMajorCache(NamedTuple):
    q: jax.Array  # [B, H, T, Dh] queries (unscaled)
    k: jax.Array  # [B, H, T, Dh]
    v: jax.Array  # [B, H, T, Dh]
    e: tuple  # per query block [a, b): [B, H, b - a, b] unnormalised exp(S - rowmax), 0 above
    # diag (in the matmul dtype: bfloat16 with matmul_dtype="bfloat16")
    inv: tuple  # per query block: [B, H, b - a, 1] 1 / (row sum of e)
    o: jax.Array  # [B, H, T, Dh] the output


def attention_forward_hm(
    q_BxHxTxD: jax.Array,
    k_BxHxTxD: jax.Array,
    v_BxHxTxD: jax.Array,
    q_block: int | None = DEFAULT_Q_BLOCK,
    matmul_dtype: str | None = None,
) -> tuple[jax.Array, HeadMajorCache]:
    """Causal attention in head-major layout [B, H, T, Dh] (see `attention_forward` for the maths).

    Every product is a plain batched [M, K] x [K, N] matmul over the (B, H) batch: the scores use
    K^T ([B, H, Dh, T], one small transpose per call) and the weighted sum e V uses V as is, so
    XLA's CPU dot runs without per-block operand transposes. The 1/sqrt(Dh) scale is applied to
    the score matmul's output (fused with the mask, row max and exp). q, k, v may already be in
    the matmul dtype (the GPT engine rounds them once at the projection); o and the accumulations
    are then float32.
    """
    t, dh = q_BxHxTxD.shape[2], q_BxHxTxD.shape[-1]
    dt, md = _acc_dtype(q_BxHxTxD), matmul_dtype
    c = jnp.asarray(1.0 / dh**0.5, dt)
    qm = _cast(q_BxHxTxD, md)
    kt = _transposed(k_BxHxTxD, md)  # [B, H, Dh, T]
    vm = _cast(v_BxHxTxD, md)
    es, invs, os = [], [], []
    for a, b in query_blocks(t, q_block):
        # causal mask as an additive constant (0 / -inf), which XLA fuses into the score matmul
        s = _nn("bhtd,bhds->bhts", qm[:, :, a:b], kt[..., :b], dt) * c + _mask_bias(a, b, dt)
        # the diagonal is present, so the row max is finite; with bf16 matmuls e is rounded once
        # here and the rounded e is used everywhere (row sums, e V, cache): half the traffic
        e = _cast(jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)), md)
        inv = 1.0 / jnp.sum(e, axis=-1, keepdims=True, dtype=dt)  # [B, H, Tq, 1]
        es.append(e)
        invs.append(inv)
        os.append(_nn("bhts,bhsd->bhtd", e, vm[:, :, :b], dt) * inv)
    o = jnp.concatenate(os, axis=2) if len(os) > 1 else os[0]
    return o, HeadMajorCache(q_BxHxTxD, k_BxHxTxD, v_BxHxTxD, tuple(es), tuple(invs), o)


def attention_backward_hm(
    cache: HeadMajorCache, do_BxHxTxD: jax.Array, matmul_dtype: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward of `attention_forward_hm` (maths in `attention_backward`), head-major layout.

    Per query block [a, b), with g = do / l:  dP = g V^T,  dS = c e (dP - g . o),
    dQ = dS K, and the key-side gradients computed transposed as plain matmuls,
    dK^T = Q^T dS and dV^T = g^T e ([B, H, Dh, b]); they are zero-padded to T keys and summed
    over the blocks, then transposed back once. Returns (dq, dk, dv), each [B, H, T, Dh].
    """
    q, k, v, es, invs, o = cache
    t, dh = q.shape[2], q.shape[-1]
    dt, md = _acc_dtype(q), matmul_dtype
    c = jnp.asarray(1.0 / dh**0.5, dt)
    qt = _transposed(q, md)  # [B, H, Dh, T]
    vt = _transposed(v, md)  # [B, H, Dh, T]
    km = _cast(k, md)
    dot_t = jnp.swapaxes(do_BxHxTxD, 2, 3)  # [B, H, Dh, T]
    dqs, dkt, dvt = [], None, None
    a = 0
    for e, inv in zip(es, invs):
        b = a + e.shape[2]
        g = do_BxHxTxD[:, :, a:b] * inv  # do_t / l_t
        row = jnp.sum(g * o[:, :, a:b], axis=-1, keepdims=True)  # g_t . o_t
        gm = _cast(g, md)
        dp = _nn("bhtd,bhds->bhts", gm, vt[..., :b], dt)
        # dS = c e (dP - g . o); with bf16 matmuls the product is taken on the rounded operands
        ds = e * _cast((dp - row) * c, e.dtype)
        dqs.append(_nn("bhts,bhsd->bhtd", ds, km[:, :, :b], dt))
        pad = ((0, 0), (0, 0), (0, 0), (0, t - b))
        dk_b = jnp.pad(_nn("bhdt,bhts->bhds", qt[..., a:b], ds, dt), pad)
        # g^T [B, H, Dh, Tq] from the transposed do (an elementwise product in that layout, so XLA
        # cannot fold a transpose into the dot, which would make it a transposed-lhs product)
        gt = _cast(dot_t[..., a:b] * jnp.swapaxes(inv, 2, 3), md)
        dv_b = jnp.pad(_nn("bhdt,bhts->bhds", gt, e, dt), pad)
        dkt = dk_b if dkt is None else dkt + dk_b
        dvt = dv_b if dvt is None else dvt + dv_b
        a = b
    dq = jnp.concatenate(dqs, axis=2) if len(dqs) > 1 else dqs[0]
    return dq, jnp.swapaxes(dkt, 2, 3), jnp.swapaxes(dvt, 2, 3)


def _acc_dtype(x: jax.Array):
    """Accumulation/output dtype: the inputs' dtype, at least float32 (bf16 inputs -> float32)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _transposed(x: jax.Array, md: str | None) -> jax.Array:
    """x^T over the last two axes, materialised (in the matmul dtype): left as a transpose, XLA
    folds it into the consuming dot as a transposed operand, and on the CPU backend bfloat16 dots
    of that form are computed by upcasting both operands to float32."""
    return jax.lax.optimization_barrier(_cast(jnp.swapaxes(x, -1, -2), md))


def _mask_bias(a: int, b: int, dtype) -> jax.Array:
    """[1, 1, b - a, b] constant: 0 where key s <= query t (t = a.., s = 0..b-1), -inf above."""
    keep = np.arange(b)[None, :] <= np.arange(a, b)[:, None]
    return jnp.asarray(np.where(keep, 0.0, -np.inf)[None, None], dtype)  # [1, 1, b - a, b]


def _to_hm(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 1, 2)  # [B, T, H, D] <-> [B, H, T, D]


def attention_forward(
    q_BxTxHxD: jax.Array,
    k_BxTxHxD: jax.Array,
    v_BxTxHxD: jax.Array,
    q_block: int | None = DEFAULT_Q_BLOCK,
    matmul_dtype: str | None = None,
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
    o, hc = attention_forward_hm(_to_hm(q_BxTxHxD), _to_hm(k_BxTxHxD), _to_hm(v_BxTxHxD), q_block, matmul_dtype)
    invs = tuple(_to_hm(inv) for inv in hc.inv)  # [B, Tq, H, 1]
    o = _to_hm(o)
    return o, AttentionCache(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, hc.e, invs, o)


def attention_probs(cache: AttentionCache) -> tuple:
    """The probability blocks P = e / l, [B, H, Tq, b] each (for inspection and tests)."""
    return tuple(e * jnp.swapaxes(inv[..., 0], 1, 2)[..., None] for e, inv in zip(cache.e, cache.inv))


def attention_backward(
    cache: AttentionCache, do_BxTxHxD: jax.Array, matmul_dtype: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
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
    hc = HeadMajorCache(_to_hm(q), _to_hm(k), _to_hm(v), es, tuple(_to_hm(i) for i in invs), _to_hm(o))
    return tuple(_to_hm(d) for d in attention_backward_hm(hc, _to_hm(do_BxTxHxD), matmul_dtype))
