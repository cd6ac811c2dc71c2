"""Affine layer y = x W^T + b with W stored rows = out, cols = in (w_OxI)."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.errors import ConfigError


def linear_init(
    key: jax.Array, in_dim: int, out_dim: int, *, scale: float | None = None, bias: bool = True, dtype=jnp.float32
) -> dict:
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
    return _add_bias(params, x_NxI @ params["w"].T), LinearCache(x_NxI)


def _add_bias(params: dict, y: jax.Array) -> jax.Array:
    if "b" in params:
        y = y + params["b"].reshape((1,) * (y.ndim - 1) + (-1,))  # explicit rank, no promotion
    return y


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


# ---------------------------------------------------------------- low-precision matmul operands
# Opt-in bfloat16 matmul operands with accumulation (and the result) in the inputs' own dtype: on CPUs
# with native bf16 dot instructions (AVX512-BF16, AMX) XLA's bf16 x bf16 -> f32 dot runs about twice
# as fast as the f32 one; master weights, activations and every non-matmul op stay float32.

MATMUL_DTYPES = ("float32", "bfloat16")


def normalize_matmul_dtype(matmul_dtype) -> str | None:
    """None/"float32" -> None (matmuls in the operands' own dtype); "bfloat16" -> "bfloat16"."""
    if matmul_dtype is None or matmul_dtype == "float32":
        return None
    if matmul_dtype == "bfloat16":
        return "bfloat16"
    raise ConfigError(f"unknown matmul_dtype {matmul_dtype!r}; expected one of {MATMUL_DTYPES}")


def matmul(spec: str, a: jax.Array, b: jax.Array, md: str | None) -> jax.Array:
    """einsum(spec, a, b); with md set, the operands are rounded to md and accumulated in the
    result type of (a, b)."""
    if md is None:
        return jnp.einsum(spec, a, b)
    out = jnp.result_type(a, b)
    return jnp.einsum(spec, a.astype(md), b.astype(md), preferred_element_type=out)


def linear_dx(dy: jax.Array, w: jax.Array, md: str | None = None) -> jax.Array:
    """du = W^T dy for y = W u (W rows = out): einsum('...o,oi->...i')."""
    return matmul("...o,oi->...i", dy, w, md)


def linear_dw(dy: jax.Array, u: jax.Array, md: str | None = None) -> jax.Array:
    """dW = sum over leading axes of dy u^T: einsum('...o,...i->oi')."""
    return matmul("...o,...i->oi", dy, u, md)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _project_lp(u, w, md):
    return matmul("...i,oi->...o", u, w, md)


def _project_lp_fwd(u, w, md):
    return _project_lp(u, w, md), (u, w)


def _project_lp_bwd(md, res, dy):
    u, w = res
    return linear_dx(dy, w, md).astype(u.dtype), linear_dw(dy, u, md).astype(w.dtype)


_project_lp.defvjp(_project_lp_fwd, _project_lp_bwd)


def project(u: jax.Array, w: jax.Array, md: str | None = None) -> jax.Array:
    """y = W u over the last axis (einsum('...i,oi->...o')), no bias. With md set, the operands are
    rounded to md and the VJP (for jax.grad) is linear_dx/linear_dw with the same rounding (so the
    backward matmuls are bf16 too, and dy is rounded the way a hand-derived backward rounds it)."""
    if md is None:
        return jnp.einsum("...i,oi->...o", u, w)
    return _project_lp(u, w, md)


def dense(params: dict, x: jax.Array, md: str | None = None) -> jax.Array:
    """linear_forward's output y = x W^T + b (b optional) for autodiff users, with optional md
    operands (see project). With md None this is exactly linear_forward(params, x)[0]."""
    if md is None:
        return linear_forward(params, x)[0]
    return _add_bias(params, project(x, params["w"], md))
