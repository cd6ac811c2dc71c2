"""Lossless float mode: split bfloat16 / float16 / float32 tensors into byte planes.

The bit pattern is rotated left by one (sign moves to the lowest bit) so that for bfloat16 and float32
the top byte is exactly the 8-bit exponent, the plane that carries the entropy of trained weights;
the other planes (mantissa bits + sign) are near-uniform and are usually stored raw by the layer coder.
Plane p holds byte p of the rotated little-endian word (plane n-1 = top byte). Merging is pure bit
manipulation, so NaN payloads, infinities, signed zeros and denormals survive bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxsys.errors import DataError

FLOAT_DTYPES = {
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
}
_UINT = {2: np.uint16, 4: np.uint32}


def float_dtype(name: str) -> np.dtype:
    if name not in FLOAT_DTYPES:
        raise DataError(f"lossless float mode supports {sorted(FLOAT_DTYPES)}, got {name}")
    return FLOAT_DTYPES[name]


def split_planes(x: np.ndarray) -> list[np.ndarray]:
    """Float array -> list of uint8 planes (same shape), lowest byte first, of the rotated bits."""
    x = np.asarray(x)
    float_dtype(x.dtype.name)
    nb = x.dtype.itemsize
    bits = 8 * nb
    u = np.ascontiguousarray(x).view(_UINT[nb])
    r = ((u << 1) | (u >> (bits - 1))).astype(_UINT[nb])
    return [((r >> (8 * p)) & 0xFF).astype(np.uint8) for p in range(nb)]


def merge_planes(planes, dtype_name: str) -> np.ndarray:
    """Inverse of `split_planes` (numpy)."""
    dt = float_dtype(dtype_name)
    nb = dt.itemsize
    U = _UINT[nb]
    r = np.zeros(np.shape(planes[0]), U)
    for p, pl in enumerate(planes):
        r |= np.asarray(pl).astype(U) << U(8 * p)
    u = ((r >> U(1)) | (r << U(8 * nb - 1))).astype(U)
    return u.view(dt)


def merge_planes_jax(planes, dtype_name: str):
    """Inverse of `split_planes` on device (jnp bit ops, then a bitcast to the float dtype)."""
    dt = float_dtype(dtype_name)
    nb = dt.itemsize
    U = jnp.uint16 if nb == 2 else jnp.uint32
    r = jnp.zeros(planes[0].shape, U)
    for p, pl in enumerate(planes):
        r = r | (pl.astype(U) << (8 * p))
    u = (r >> 1) | (r << (8 * nb - 1))
    return jax.lax.bitcast_convert_type(u, jnp.dtype(dt))


def exponent_entropy_bits(x: np.ndarray) -> float:
    """Order-0 entropy (bits) of the top (exponent) plane: the bound the exponent coder aims at."""
    from jaxsys.codec.tiles import entropy_bits

    top = split_planes(x)[-1]
    return entropy_bits(np.bincount(top.reshape(-1), minlength=256))
