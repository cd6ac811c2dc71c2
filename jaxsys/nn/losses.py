"""Losses with hand-derived backward passes."""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class MSECache(NamedTuple):
    diff: jax.Array  # [B, ...] prediction minus target


def mse_forward(pred_BxD: jax.Array, target_BxD: jax.Array) -> tuple[jax.Array, MSECache]:
    """L = (1 / (2B)) sum_{b,d} (Yp - Y)^2, B = leading (batch) axis."""
    diff = pred_BxD - target_BxD
    return 0.5 * jnp.sum(diff * diff) / pred_BxD.shape[0], MSECache(diff)


def mse_backward(cache: MSECache, dloss: jax.Array | float = 1.0) -> jax.Array:
    """dL/dYp = (Yp - Y) / B."""
    return dloss * cache.diff / cache.diff.shape[0]


class XentCache(NamedTuple):
    probs: jax.Array  # [B, C] softmax of the logits
    onehot: jax.Array  # [B, C]


def softmax_cross_entropy_forward(logits_BxC: jax.Array, labels_B: jax.Array) -> tuple[jax.Array, XentCache]:
    """L = -(1/B) sum_b log softmax(logits_b)[y_b], computed with a max-shifted log-sum-exp."""
    shifted = logits_BxC - jax.lax.stop_gradient(logits_BxC.max(axis=-1, keepdims=True))
    logz = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    logp = shifted - logz
    onehot = jax.nn.one_hot(labels_B, logits_BxC.shape[-1], dtype=logits_BxC.dtype)
    loss = -jnp.sum(onehot * logp) / logits_BxC.shape[0]
    return loss, XentCache(jnp.exp(logp), onehot)


def softmax_cross_entropy_backward(cache: XentCache, dloss: jax.Array | float = 1.0) -> jax.Array:
    """dL/dlogits = (softmax(logits) - onehot(y)) / B."""
    return dloss * (cache.probs - cache.onehot) / cache.probs.shape[0]
