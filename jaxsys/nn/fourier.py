"""Fourier positional encoding (no parameters).

enc(p) = [p (optional), sin(2^k 2 pi p_c), cos(2^k 2 pi p_c) for k = 0..K-1 for each coordinate c]

laid out per frequency k, then per coordinate c:
[p_0..p_{C-1}, sin(2pi p_0), cos(2pi p_0), sin(2pi p_1), cos(2pi p_1), sin(4pi p_0), ...],
i.e. for 2D (x, y): [x, y, sin(2^k 2pi x), cos(2^k 2pi x), sin(2^k 2pi y), cos(2^k 2pi y)] for k = 0..K-1.
"""

import jax
import jax.numpy as jnp

from jaxsys.errors import ConfigError


def fourier_dim(in_dim: int, num_freqs: int, include_input: bool = True) -> int:
    return in_dim * (2 * num_freqs + (1 if include_input else 0))


def _freqs(num_freqs: int, dtype) -> jax.Array:
    return (2.0 ** jnp.arange(num_freqs, dtype=dtype)) * (2 * jnp.pi)


def fourier_features(p_NxC: jax.Array, num_freqs: int, include_input: bool = True) -> jax.Array:
    """Encode coordinates p [..., C] -> [..., C * (2K + include_input)].

    Output order: [p_0, ..., p_{C-1}] (if include_input), then for k in 0..K-1, for c in 0..C-1:
    sin(2^k 2 pi p_c), cos(2^k 2 pi p_c).
    """
    if num_freqs < 0:
        raise ConfigError(f"fourier_features: num_freqs must be >= 0, got {num_freqs}")
    ang = _freqs(num_freqs, p_NxC.dtype)[:, None] * p_NxC[..., None, :]  # [..., K, C]
    sc = jnp.stack([jnp.sin(ang), jnp.cos(ang)], axis=-1)  # [..., K, C, 2]
    feats = sc.reshape(*p_NxC.shape[:-1], -1)
    return jnp.concatenate([p_NxC, feats], axis=-1) if include_input else feats


def fourier_features_backward(
    p_NxC: jax.Array, d_enc: jax.Array, num_freqs: int, include_input: bool = True
) -> jax.Array:
    """d enc / d p: sin' = w cos, cos' = -w sin with w = 2^k 2 pi; raw input passes through."""
    w = _freqs(num_freqs, p_NxC.dtype)
    w_Kx1 = w[:, None]
    ang = w_Kx1 * p_NxC[..., None, :]  # [..., K, C]
    C = p_NxC.shape[-1]
    off = C if include_input else 0
    d_sc = d_enc[..., off:].reshape(*p_NxC.shape[:-1], num_freqs, C, 2)
    dp = jnp.sum(d_sc[..., 0] * w_Kx1 * jnp.cos(ang) - d_sc[..., 1] * w_Kx1 * jnp.sin(ang), axis=-2)
    if include_input:
        dp = dp + d_enc[..., :C]
    return dp
