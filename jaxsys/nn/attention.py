"""Causal multi-head scaled dot-product attention core with a hand-derived backward.

Layout: q, k, v, o are [B, T, H, Dh] (batch, time, head, head dim), i.e. a [B, T, E] projection
reshaped to heads without a transpose; the score/probability tensors are [B, H, T, T]. The einsums
below let XLA pick the batched-matmul layouts.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class AttentionCache(NamedTuple):
    q: jax.Array  # [B, T, H, Dh]
    k: jax.Array  # [B, T, H, Dh]
    v: jax.Array  # [B, T, H, Dh]
    p: jax.Array  # [B, H, T, T] attention probabilities (zero above the diagonal)
    o: jax.Array  # [B, T, H, Dh] the output


def causal_mask(t: int) -> jax.Array:
    """[T, T] boolean, True where key position s <= query position t."""
    return jnp.tril(jnp.ones((t, t), dtype=bool))


def attention_forward(q_BxTxHxD: jax.Array, k_BxTxHxD: jax.Array, v_BxTxHxD: jax.Array
                      ) -> tuple[jax.Array, AttentionCache]:
    """o_t = sum_{s<=t} p_ts v_s with p_t = softmax_s(q_t . k_s / sqrt(Dh)) over s <= t, per head.

    Args:
      q, k, v: [B, T, H, Dh] queries, keys and values.

    Returns:
      (o [B, T, H, Dh], AttentionCache).
    """
    t, dh = q_BxTxHxD.shape[1], q_BxTxHxD.shape[-1]
    scale = 1.0 / (dh ** 0.5)
    s = jnp.einsum("bthd,bshd->bhts", q_BxTxHxD * jnp.asarray(scale, q_BxTxHxD.dtype), k_BxTxHxD)
    s = jnp.where(causal_mask(t)[None, None], s, -jnp.inf)
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))   # the diagonal is always present: max finite
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    o = jnp.einsum("bhts,bshd->bthd", p, v_BxTxHxD)
    return o, AttentionCache(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, p, o)


def attention_backward(cache: AttentionCache, do_BxTxHxD: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward of the causal attention core, per batch b and head h (indices t: query, s: key).

    Forward: S_ts = c q_t . k_s (c = 1/sqrt(Dh)), P_t = softmax over s <= t of S_t (P_ts = 0 for
    s > t), o_t = sum_s P_ts v_s.

    - o is linear in v and P:  dv_s = sum_t P_ts do_t  (dV = P^T dO)  and  dP_ts = do_t . v_s.
    - softmax: dS_ts = P_ts (dP_ts - sum_s' P_ts' dP_ts'). The row sum simplifies to
      sum_s' P_ts' (do_t . v_s') = do_t . o_t, a [T]-vector per head instead of a [T, T] reduction.
      Masked entries have P_ts = 0, hence dS_ts = 0: the mask needs no separate backward.
    - S is bilinear in q and k:  dq_t = c sum_s dS_ts k_s  (dQ = c dS K),  dk_s = c sum_t dS_ts q_t
      (dK = c dS^T Q).

    Returns:
      (dq, dk, dv), each [B, T, H, Dh].
    """
    q, k, v, p, o = cache
    scale = jnp.asarray(1.0 / (q.shape[-1] ** 0.5), q.dtype)
    dv = jnp.einsum("bhts,bthd->bshd", p, do_BxTxHxD)
    dp = jnp.einsum("bthd,bshd->bhts", do_BxTxHxD, v)
    row = jnp.einsum("bthd,bthd->bht", do_BxTxHxD, o)[..., None]
    ds = p * (dp - row) * scale
    dq = jnp.einsum("bhts,bshd->bthd", ds, k)
    dk = jnp.einsum("bhts,bthd->bshd", ds, q)
    return dq, dk, dv
