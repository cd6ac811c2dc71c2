"""Symmetric absmax int8 quantisation of float weights (per tensor or per output channel).

scale = max|w| / 127   (over the whole tensor, or over each output row of w_OxI)
q = clip(round(w / scale), -127, 127)            w ~ q * scale
"""

from __future__ import annotations

import numpy as np

from jaxsys.errors import ConfigError, DataError, ShapeError


def quantize_int8(w, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a float array to int8.

    Args:
      w: float array; per-channel mode needs ndim >= 2 and treats axis 0 as the output channel.
      per_channel: one scale per output channel (row) instead of one per tensor.
    Returns:
      (q int8 with w's shape, scale float32 of shape () or (w.shape[0],)).
    """
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        raise DataError(f"quantize_int8 expects a float array, got {w.dtype}")
    if w.size == 0:
        raise ShapeError("cannot quantise an empty array")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise DataError("quantize_int8: weights contain NaN or inf")
    if per_channel:
        if w.ndim < 2:
            raise ShapeError(f"per-channel quantisation needs ndim >= 2, got shape {w.shape}")
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    else:
        amax = np.abs(w).max()
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    s = scale.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1)) if per_channel else float(scale)
    q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q, scale, dtype=np.float32) -> np.ndarray:
    """Inverse of `quantize_int8`: q * scale (scale per tensor, or per row of axis 0)."""
    q = np.asarray(q)
    scale = np.asarray(scale, dtype=np.float32)
    if q.dtype != np.int8:
        raise DataError(f"dequantize_int8 expects int8, got {q.dtype}")
    if scale.ndim == 0:
        return (q.astype(np.float32) * scale).astype(dtype)
    if scale.ndim != 1 or q.ndim < 2 or scale.shape[0] != q.shape[0]:
        raise ConfigError(f"per-channel scale of shape {scale.shape} does not fit q of shape {q.shape}")
    return (q.astype(np.float32) * scale.reshape((-1,) + (1,) * (q.ndim - 1))).astype(dtype)
