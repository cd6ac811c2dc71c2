"""RMS normalisation without gain (microgpt): y = x / sqrt(mean(x^2) + eps) over the last axis."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

RMSNORM_EPS = 1e-5


class RMSNormCache(NamedTuple):
    y: jax.Array  # [..., D] the normalised output x * r
    r: jax.Array  # [..., 1] the inverse rms, (mean(x^2) + eps)^(-1/2)


def rmsnorm_forward(x_NxD: jax.Array, eps: float = RMSNORM_EPS) -> tuple[jax.Array, RMSNormCache]:
    """y = x * r with r = (mean_j x_j^2 + eps)^(-1/2), over the last axis (any leading axes)."""
    r = jax.lax.rsqrt(jnp.mean(x_NxD * x_NxD, axis=-1, keepdims=True) + eps)
    y = x_NxD * r
    return y, RMSNormCache(y, r)


def rmsnorm_backward(cache: RMSNormCache, dy_NxD: jax.Array) -> jax.Array:
    """Backward of y = x r, r = (m + eps)^(-1/2), m = (1/D) sum_j x_j^2.

    Per row: dr/dx_j = -(1/2)(m + eps)^(-3/2) (2 x_j / D) = -r^3 x_j / D, so

        dy_i/dx_j = r delta_ij - x_i r^3 x_j / D = r (delta_ij - y_i y_j / D)

    and the vector-Jacobian product is

        dx_j = sum_i dy_i dy_i/dx_j = r (dy_j - y_j mean_i(dy_i y_i)).

    Returns dx with the shape of x.
    """
    y, r = cache
    return r * (dy_NxD - y * jnp.mean(dy_NxD * y, axis=-1, keepdims=True))
