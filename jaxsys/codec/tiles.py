"""Tiles, lanes and predictors: the geometry every blob format and decoder shares.

A 2-D tensor [rows, cols] is cut into tiles of tile_rows x tile_cols (ragged at the far edges), a 1-D
tensor is one row with tiles of tile_rows * tile_cols symbols. Symbol i of a tile goes to lane i mod L
(step i // L), so a tile of n symbols gives lane l `lane_symbols` = ceil((n - l) / L) symbols.
"""

from __future__ import annotations

import numpy as np

from jaxsys.errors import ConfigError, DataError, ShapeError

MAX_ELEMENTS = 1 << 31
MAX_LANES = 4096
MAX_LANE_SYMBOLS = 65533  # keeps a lane's word count (<= symbols + 2) in a u16
DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.int8)}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
PRED_NONE, PRED_DELTA = 0, 1
PREDICTORS = {"none": PRED_NONE, "delta": PRED_DELTA}
PREDICTOR_NAMES = {v: k for k, v in PREDICTORS.items()}


def grid(rows: int, cols: int, tr: int, tc: int) -> tuple[int, int]:
    """Tiles along the rows and along the columns."""
    return -(-rows // tr), -(-cols // tc)


def tile_groups(rows: int, cols: int, tr: int, tc: int):
    """The <= 4 regular groups of tiles (full / ragged rows x full / ragged columns).

    Yields (r0, nr, h, c0, nc, w): tile rows r0..r0+nr-1 of height h, tile cols c0..c0+nc-1 of width w.
    """
    rg = [(0, rows // tr, tr)] + ([(rows // tr, 1, rows % tr)] if rows % tr else [])
    cg = [(0, cols // tc, tc)] + ([(cols // tc, 1, cols % tc)] if cols % tc else [])
    for r0, nr, h in rg:
        if nr == 0:
            continue
        for c0, nc, w in cg:
            if nc == 0:
                continue
            yield r0, nr, h, c0, nc, w


def group_tile_ids(r0: int, nr: int, c0: int, nc: int, gc: int) -> np.ndarray:
    """Raster-order ids of the tiles of one `tile_groups` group."""
    return ((r0 + np.arange(nr))[:, None] * gc + (c0 + np.arange(nc))[None, :]).reshape(-1)


def tile_sizes(rows: int, cols: int, tr: int, tc: int) -> np.ndarray:
    """Symbols of each tile, raster order."""
    gr, gc = grid(rows, cols, tr, tc)
    hs = np.minimum(tr, rows - np.arange(gr) * tr)
    ws = np.minimum(tc, cols - np.arange(gc) * tc)
    return (hs[:, None] * ws[None, :]).reshape(-1).astype(np.int64)


def lane_symbols(sizes: np.ndarray, lanes: int) -> np.ndarray:
    """(T, L) symbols of lane l of a tile of sizes[t] symbols: ceil((sizes[t] - l) / L), at least 0."""
    L = int(lanes)
    return np.maximum(0, -(-(np.asarray(sizes)[:, None] - np.arange(L)[None, :]) // L))


def to_tiles(u2: np.ndarray, tr: int, tc: int, fill: int = 0) -> np.ndarray:
    """(rows, cols) -> (T, tile_max) raster-order tile contents, padded with `fill`."""
    rows, cols = u2.shape
    gr, gc = grid(rows, cols, tr, tc)
    out = np.full((gr * gc, min(tr, rows) * min(tc, cols)), fill, dtype=u2.dtype)
    for r0, nr, h, c0, nc, w in tile_groups(rows, cols, tr, tc):
        blk = u2[r0 * tr : r0 * tr + nr * h, c0 * tc : c0 * tc + nc * w]
        out[group_tile_ids(r0, nr, c0, nc, gc), : h * w] = (
            blk.reshape(nr, h, nc, w).transpose(0, 2, 1, 3).reshape(nr * nc, h * w)
        )
    return out


def from_tiles(t: np.ndarray, rows: int, cols: int, tr: int, tc: int) -> np.ndarray:
    """Inverse of `to_tiles`."""
    gc = grid(rows, cols, tr, tc)[1]
    out = np.empty((rows, cols), dtype=t.dtype)
    for r0, nr, h, c0, nc, w in tile_groups(rows, cols, tr, tc):
        blk = t[group_tile_ids(r0, nr, c0, nc, gc), : h * w]
        out[r0 * tr : r0 * tr + nr * h, c0 * tc : c0 * tc + nc * w] = (
            blk.reshape(nr, nc, h, w).transpose(0, 2, 1, 3).reshape(nr * h, nc * w)
        )
    return out


def delta_forward(t: np.ndarray) -> np.ndarray:
    d = t.copy()
    d[:, 1:] = t[:, 1:] - t[:, :-1]  # uint8 arithmetic wraps mod 256
    return d


def delta_inverse(d: np.ndarray) -> np.ndarray:
    return np.cumsum(d, axis=1, dtype=np.uint8)  # uint8 sums wrap mod 256


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 entropy bound in bits of a symbol multiset: sum_s c_s log2(n / c_s)."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum()
    c = c[c > 0]
    return float((c * np.log2(n / c)).sum())


def raw_sums(u8: np.ndarray) -> tuple[int, int]:
    """(sum b_i, sum (i+1) b_i) mod 2^32 over the flat bytes: a cheap positional checksum that the
    device can recompute with two uint32 reductions."""
    b = u8.reshape(-1).astype(np.uint64)
    i = np.arange(1, b.size + 1, dtype=np.uint64)
    return int(b.sum() & 0xFFFFFFFF), int((b * i).sum() & 0xFFFFFFFF)


def check_array(x) -> np.ndarray:
    """A non-empty 1-D or 2-D int8/uint8 array (contiguous), or a clear error."""
    x = np.asarray(x)
    if x.dtype not in DTYPE_CODES:
        raise DataError(
            f"codec encodes int8/uint8 arrays, got dtype {x.dtype} "
            "(quantize floats with jaxsys.codec.quantize_int8 first)"
        )
    if x.ndim not in (1, 2):
        raise ShapeError(f"codec encodes 1-D or 2-D arrays, got shape {x.shape}")
    if x.size == 0:
        raise ShapeError(f"cannot encode an empty array (shape {x.shape})")
    if x.size > MAX_ELEMENTS:
        raise ShapeError(f"array of {x.size} elements exceeds the codec limit {MAX_ELEMENTS}")
    return np.ascontiguousarray(x)


def check_coder_args(lanes: int, predictor: str, tile_shape) -> tuple[int, int]:
    """Validate the shared encoder options; returns the tile shape as ints."""
    if not (1 <= int(lanes) <= MAX_LANES):
        raise ConfigError(f"lanes must be in 1..{MAX_LANES}, got {lanes}")
    if predictor not in ("auto", "none", "delta"):
        raise ConfigError(f"predictor must be auto, none or delta, got {predictor!r}")
    tr, tc = (int(v) for v in tile_shape)
    if tr < 1 or tc < 1:
        raise ConfigError(f"tile_shape must be positive, got {tile_shape}")
    return tr, tc


def as_rows(x: np.ndarray, tr: int, tc: int) -> tuple[np.ndarray, int, int]:
    """(uint8 view of x as [rows, cols], tile rows, tile cols): a 1-D tensor is one row whose tiles
    hold tr * tc symbols."""
    u = x.view(np.uint8)
    if x.ndim == 1:
        return u.reshape(1, -1), 1, tr * tc
    return u, tr, tc


def lane_count(P: int, lanes: int, min_lane_symbols: int) -> int:
    """Lanes for tiles of P symbols: `lanes`, or fewer so each lane has >= min_lane_symbols (> 0);
    ConfigError when a lane would exceed MAX_LANE_SYMBOLS."""
    L = int(lanes)
    if min_lane_symbols > 0:
        L = max(1, min(L, P // int(min_lane_symbols)))
    if -(-P // L) > MAX_LANE_SYMBOLS:
        raise ConfigError(
            f"tile of {P} symbols over {L} lanes exceeds {MAX_LANE_SYMBOLS} symbols per lane; "
            "use more lanes or smaller tiles"
        )
    return L


def best_predictor(tiles: np.ndarray, valid: np.ndarray, predictor: str):
    """(predictor code, predicted tiles, symbol counts (256,)) with the lower order-0 entropy among
    the allowed predictors ("auto": none and delta; ties keep none)."""
    cand = {}
    if predictor in ("auto", "none"):
        cand[PRED_NONE] = tiles
    if predictor in ("auto", "delta"):
        cand[PRED_DELTA] = delta_forward(tiles)
    best = None
    for pred, t in cand.items():
        counts = np.bincount(t[valid], minlength=256)
        h = entropy_bits(counts)
        if best is None or h < best[0] - 1e-9:
            best = (h, pred, t, counts)
    return best[1], best[2], best[3]


def interleave(sym_TxP: np.ndarray, sizes: np.ndarray, lanes: int, steps: int, fill: int) -> np.ndarray:
    """(T, P) tile symbols -> (steps, T * L) step-major lane symbols; padding gets `fill`."""
    T, P = sym_TxP.shape
    L = int(lanes)
    valid = np.arange(P)[None, :] < np.asarray(sizes)[:, None]
    padded = np.full((T, steps * L), fill, np.uint8)
    padded[:, :P] = np.where(valid, sym_TxP, fill)
    return padded.reshape(T, steps, L).transpose(1, 0, 2).reshape(steps, T * L)


def deinterleave(sym_SxN: np.ndarray, T: int, L: int, S: int, tile_max: int) -> np.ndarray:
    """Inverse of `interleave`: step-major lane symbols -> (T, tile_max) tile symbols."""
    return np.ascontiguousarray(
        sym_SxN[:S, : T * L].reshape(S, T, L).transpose(1, 0, 2).reshape(T, S * L)[:, :tile_max]
    )
