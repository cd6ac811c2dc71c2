"""Affine layer y = x W^T + b with W stored rows = out, cols = in (w_OxI)."""
from typing import NamedTuple

import jax
import jax.numpy as jnp


def linear_init(key: jax.Array, in_dim: int, out_dim: int, *, scale: float | None = None,
                bias: bool = True, dtype=jnp.float32) -> dict:
    """He-style init: W ~ N(0, scale^2) with scale = sqrt(2 / in_dim) unless given; b = 0."""
    scale = (2.0 / in_dim) ** 0.5 if scale is None else scale
    params = {"w": scale * jax.random.normal(key, (out_dim, in_dim), dtype)}
    if bias:
        params["b"] = jnp.zeros((out_dim,), dtype)
    return params


class LinearCache(NamedTuple):
    x: jax.Array  # [..., I] the layer input


def linear_forward(params: dict, x_NxI: jax.Array) -> tuple[jax.Array, LinearCache]:
    """y = x W^T + b over any leading batch axes. `params = {"w": [O, I], "b": [O]}` (b optional)."""
    y = x_NxI @ params["w"].T
    if "b" in params:
        y = y + params["b"].reshape((1,) * (y.ndim - 1) + (-1,))  # explicit rank, no promotion
    return y, LinearCache(x_NxI)


def linear_backward(params: dict, cache: LinearCache, dy_NxO: jax.Array) -> tuple[dict, jax.Array]:
    """Backward of y = x W^T + b.

    dW = dy^T x (summed over all leading axes), db = sum dy over leading axes, dx = dy W.

    Returns:
      (dparams with the keys of params, dx of the shape of x).
    """
    x = cache.x
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy_NxO.reshape(-1, dy_NxO.shape[-1])
    grads = {"w": dy2.T @ x2}
    if "b" in params:
        grads["b"] = dy2.sum(axis=0)
    dx = dy_NxO @ params["w"]
    return grads, dx
