"""Throughput and size measurements of the codec on synthetic layers (used by the CLI, the tour
stage and experiments/bench_codec.py)."""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec import tiles as tl
from jaxsys.codec.decode import decode_layer


def gaussian_int8(n_rows: int, n_cols: int, sigma: float = 20.0, seed: int = 0) -> np.ndarray:
    """Discretised Gaussian int8 layer: clip(round(N(0, sigma^2)), -128, 127)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.normal(0.0, sigma, (n_rows, n_cols))), -128, 127).astype(np.int8)


def coded_entropy_bits(x: np.ndarray, blob: bytes) -> float:
    """Order-0 entropy bound (bits) of the symbols the blob actually codes (its chosen predictor)."""
    h = fmt.parse_header(blob)
    u2 = np.ascontiguousarray(x).view(np.uint8).reshape(h.rows, h.cols)
    t = tl.to_tiles(u2, h.tile_rows, h.tile_cols)
    if h.predictor == tl.PRED_DELTA:
        t = tl.delta_forward(t)
    valid = np.arange(t.shape[1])[None, :] < h.tile_sizes()[:, None]
    return tl.entropy_bits(np.bincount(t[valid], minlength=256))


def group_symbols(blob, arrays) -> np.ndarray:
    """Pooled histogram (256,) of the symbols a group blob codes with its shared table (each rANS
    tensor's chosen-predictor symbols); its order-0 entropy is the bound a shared table aims at."""
    pg = G.parse_group(blob, check_crc=False)
    counts = np.zeros(256, np.int64)
    for m, x in zip(pg.members, arrays):
        h = m.header
        if h.coding == fmt.CODING_RAW:
            continue
        t = tl.to_tiles(np.ascontiguousarray(x).view(np.uint8).reshape(h.rows, h.cols), h.tile_rows, h.tile_cols)
        if h.predictor == tl.PRED_DELTA:
            t = tl.delta_forward(t)
        counts += np.bincount(t[np.arange(t.shape[1])[None, :] < h.tile_sizes()[:, None]], minlength=256)
    return counts


def timeit(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def quick_bench(
    n: int = 1024, tile: int = 256, lanes: int = 32, prob_bits: int = 14, repeats: int = 3, sigma: float = 20.0
) -> dict:
    x = gaussian_int8(n, n, sigma)
    kw = dict(tile_shape=(tile, tile), lanes=lanes, prob_bits=prob_bits)
    blob = fmt.encode_layer(x, **kw)
    y = decode_layer(blob)  # compile + correctness (device flags, raw CRC32)
    if not np.array_equal(np.asarray(y), x):
        raise AssertionError("codec bench: JAX decode differs from the input")
    enc = timeit(lambda: fmt.encode_layer(x, **kw), repeats)
    dec = timeit(lambda: decode_layer(blob, check=False), repeats)  # the decode itself, verified above
    mb = x.nbytes / 1e6
    hbits = coded_entropy_bits(x, blob)
    return {
        "shape": f"{n}x{n}",
        "tile": f"{tile}x{tile}",
        "lanes": lanes,
        "prob_bits": prob_bits,
        "raw_bytes": x.nbytes,
        "blob_bytes": len(blob),
        "ratio": x.nbytes / len(blob),
        "entropy_bytes": hbits / 8,
        "over_entropy_pct": 100 * (len(blob) * 8 / hbits - 1),
        "encode_MBps": mb / float(np.median(enc)),
        "decode_jax_MBps": mb / float(np.median(dec)),
    }
