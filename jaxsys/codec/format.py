"""The layer blob: a self-describing, versioned, little-endian container for one int8/uint8 tensor.

    [header | frequency table | tile index | tile data]     (byte layout: notes/codec.md)

Encoding (numpy, two passes): tile the array, apply the predictor per tile, build one global histogram
(the predictor with the lower order-0 entropy wins), normalise it to 2^prob_bits, then encode all tiles'
lanes in lock-step with the shared table. Decoding lives in `decode.py` (JAX) and here (host decoders).
Every structural problem of a blob raises `CodecError` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from jaxsys.codec import rans
from jaxsys.errors import ConfigError, DataError, JaxsysError, ShapeError


class CodecError(JaxsysError):
    """A compressed blob or container is truncated, corrupted or inconsistent."""


MAGIC = b"JXRL"
VERSION = 1
DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.int8)}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
CODING_RANS, CODING_RAW = 0, 1
PRED_NONE, PRED_DELTA = 0, 1
PREDICTORS = {"none": PRED_NONE, "delta": PRED_DELTA}
PREDICTOR_NAMES = {v: k for k, v in PREDICTORS.items()}

# magic, version, header_size, dtype, ndim, coding, predictor, prob_bits, reserved, lanes,
# rows, cols, tile_rows, tile_cols, n_tiles, table_off, table_size, index_off, index_size,
# payload_off, payload_size, raw_crc, raw_sum1, raw_sum2, payload_crc, meta_crc
_HDR = struct.Struct("<4sHHBBBBBBH" + "I" * 16)
HEADER_SIZE = _HDR.size  # 80 bytes
MAX_ELEMENTS = 1 << 31
MAX_LANES = 4096
MAX_LANE_SYMBOLS = 65533  # keeps a lane's word count (<= symbols + 2) in a u16
TILE_ENTRY = struct.Struct("<III")  # offset (from payload start), byte length, symbol count


@dataclasses.dataclass(frozen=True)
class LayerHeader:
    dtype: np.dtype  # uint8 or int8
    shape: tuple  # original shape (1-D or 2-D)
    rows: int  # 2-D view rows (1 for a 1-D tensor)
    cols: int  # 2-D view columns
    tile_rows: int  # tile height (1 for a 1-D tensor)
    tile_cols: int  # tile width
    n_tiles: int  # ceil(rows / tile_rows) * ceil(cols / tile_cols)
    lanes: int  # interleaved rANS lanes per tile
    prob_bits: int  # frequency precision, 12..16
    coding: int  # CODING_RANS or CODING_RAW
    predictor: int  # PRED_NONE or PRED_DELTA
    table_off: int
    table_size: int
    index_off: int
    index_size: int
    payload_off: int
    payload_size: int
    raw_crc: int  # CRC32 of the raw bytes (row-major)
    raw_sum1: int  # sum of raw bytes mod 2^32 (checkable on device)
    raw_sum2: int  # sum of (i + 1) * byte_i mod 2^32
    payload_crc: int  # CRC32 of the tile data
    meta_crc: int  # CRC32 of header (without this field), table and index

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.rows // self.tile_rows), -(-self.cols // self.tile_cols)

    @property
    def tile_max(self) -> int:
        return min(self.tile_rows, self.rows) * min(self.tile_cols, self.cols)

    @property
    def steps(self) -> int:
        return -(-self.tile_max // self.lanes)


@dataclasses.dataclass(frozen=True)
class ParsedLayer:
    header: LayerHeader
    freq: np.ndarray  # (256,) int64, sums to 2^prob_bits (zeros for raw coding)
    tile_off: np.ndarray  # (T,) byte offset of each tile from the payload start
    tile_len: np.ndarray  # (T,) byte length
    tile_nsym: np.ndarray  # (T,) symbols
    lane_words: np.ndarray  # (T, L) words per lane
    payload: memoryview  # tile data bytes


def raw_sums(u8: np.ndarray) -> tuple[int, int]:
    """(sum b_i, sum (i+1) b_i) mod 2^32 over the flat bytes: a cheap positional checksum that the
    device can recompute with two uint32 reductions."""
    b = u8.reshape(-1).astype(np.uint64)
    i = np.arange(1, b.size + 1, dtype=np.uint64)
    return int(b.sum() & 0xFFFFFFFF), int((b * i).sum() & 0xFFFFFFFF)


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 entropy bound in bits of a symbol multiset: sum_s c_s log2(n / c_s)."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum()
    c = c[c > 0]
    return float((c * np.log2(n / c)).sum())


# ---------------------------------------------------------------------------------------------------
# tiling (numpy; the JAX assembler in decode.py uses the same groups)


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


def tile_sizes(rows: int, cols: int, tr: int, tc: int) -> np.ndarray:
    gr, gc = -(-rows // tr), -(-cols // tc)
    hs = np.minimum(tr, rows - np.arange(gr) * tr)
    ws = np.minimum(tc, cols - np.arange(gc) * tc)
    return (hs[:, None] * ws[None, :]).reshape(-1).astype(np.int64)


def to_tiles(u2: np.ndarray, tr: int, tc: int, fill: int = 0) -> np.ndarray:
    """(rows, cols) -> (T, tile_max) raster-order tile contents, padded with `fill`."""
    rows, cols = u2.shape
    gr, gc = -(-rows // tr), -(-cols // tc)
    P = min(tr, rows) * min(tc, cols)
    out = np.full((gr * gc, P), fill, dtype=u2.dtype)
    for r0, nr, h, c0, nc, w in tile_groups(rows, cols, tr, tc):
        blk = u2[r0 * tr : r0 * tr + nr * h, c0 * tc : c0 * tc + nc * w]
        blk = blk.reshape(nr, h, nc, w).transpose(0, 2, 1, 3).reshape(nr * nc, h * w)
        ids = ((r0 + np.arange(nr))[:, None] * gc + (c0 + np.arange(nc))[None, :]).reshape(-1)
        out[ids, : h * w] = blk
    return out


def from_tiles(t: np.ndarray, rows: int, cols: int, tr: int, tc: int) -> np.ndarray:
    """Inverse of `to_tiles`."""
    gc = -(-cols // tc)
    out = np.empty((rows, cols), dtype=t.dtype)
    for r0, nr, h, c0, nc, w in tile_groups(rows, cols, tr, tc):
        ids = ((r0 + np.arange(nr))[:, None] * gc + (c0 + np.arange(nc))[None, :]).reshape(-1)
        blk = t[ids, : h * w].reshape(nr, nc, h, w).transpose(0, 2, 1, 3).reshape(nr * h, nc * w)
        out[r0 * tr : r0 * tr + nr * h, c0 * tc : c0 * tc + nc * w] = blk
    return out


def delta_forward(t: np.ndarray) -> np.ndarray:
    d = t.copy()
    d[:, 1:] = t[:, 1:] - t[:, :-1]  # uint8 arithmetic wraps mod 256
    return d


def delta_inverse(d: np.ndarray) -> np.ndarray:
    return (np.cumsum(d.astype(np.uint64), axis=1) & 0xFF).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# encoder


def _validate_input(x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
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
            f"tile of {P} symbols over {L} lanes exceeds {MAX_LANE_SYMBOLS} "
            "symbols per lane; use more lanes or smaller tiles"
        )
    return L


def encode_layer(
    x,
    tile_shape: tuple[int, int] = (256, 256),
    lanes: int = 32,
    prob_bits: int = 14,
    predictor: str = "auto",
    allow_raw: bool = True,
    min_lane_symbols: int = 0,
) -> bytes:
    """Compress an int8/uint8 array (1-D or 2-D) into one layer blob.

    Args:
      x: int8 or uint8 array, 1-D or 2-D, non-empty.
      tile_shape: (rows, cols) of a tile; a 1-D tensor uses tiles of rows * cols elements.
      lanes: interleaved rANS lanes per tile (symbol i of a tile goes to lane i mod lanes).
      prob_bits: frequency precision, 12..16.
      predictor: "none", "delta" or "auto" (the lower measured order-0 entropy of the two).
      allow_raw: store the bytes uncoded when coding would not make the blob smaller.
      min_lane_symbols: use fewer lanes when a tile has fewer than lanes * min_lane_symbols symbols
        (each lane costs ~6 bytes: its flushed state and word count); 0 keeps `lanes`.
    """
    x = _validate_input(x)
    if not (rans.MIN_PROB_BITS <= int(prob_bits) <= rans.MAX_PROB_BITS):
        raise ConfigError(f"prob_bits must be in 12..16, got {prob_bits}")
    if not (1 <= int(lanes) <= MAX_LANES):
        raise ConfigError(f"lanes must be in 1..{MAX_LANES}, got {lanes}")
    if predictor not in ("auto", "none", "delta"):
        raise ConfigError(f"predictor must be auto, none or delta, got {predictor!r}")
    tr, tc = (int(v) for v in tile_shape)
    if tr < 1 or tc < 1:
        raise ConfigError(f"tile_shape must be positive, got {tile_shape}")
    u2, tr, tc = as_rows(x, tr, tc)
    rows, cols = u2.shape
    P = min(tr, rows) * min(tc, cols)
    lanes = lane_count(P, lanes, min_lane_symbols)
    sizes = tile_sizes(rows, cols, tr, tc)
    T = len(sizes)
    tiles = to_tiles(u2, tr, tc)
    valid = np.arange(P)[None, :] < sizes[:, None]
    cand = {"none": tiles}
    if predictor in ("auto", "delta"):
        cand["delta"] = delta_forward(tiles)
    if predictor == "delta":
        del cand["none"]
    best = None
    for name, t in cand.items():
        counts = np.bincount(t[valid], minlength=256)
        h = entropy_bits(counts)
        if best is None or h < best[2] - 1e-9:
            best = (name, t, h, counts)
    pred_name, sym_t, _, counts = best
    raw_crc = zlib.crc32(u2.tobytes())
    s1, s2 = raw_sums(u2)
    geom = dict(
        dtype=x.dtype,
        shape=x.shape,
        rows=rows,
        cols=cols,
        tile_rows=tr,
        tile_cols=tc,
        n_tiles=T,
        lanes=int(lanes),
        prob_bits=int(prob_bits),
        raw_crc=raw_crc,
        raw_sum1=s1,
        raw_sum2=s2,
    )

    freq = rans.normalize_freqs(counts, prob_bits)
    # lanes: tile symbol i -> lane i % L, step i // L; padding gets a present symbol
    L = int(lanes)
    S = -(-P // L)
    fill = int(np.argmax(freq))
    padded = np.full((T, S * L), fill, dtype=np.uint8)
    padded[:, :P] = np.where(valid, sym_t, fill)
    sym_SxN = np.ascontiguousarray(padded.reshape(T, S, L).transpose(1, 0, 2).reshape(S, T * L))
    len_TxL = np.maximum(0, -(-(sizes[:, None] - np.arange(L)[None, :]) // L))
    words, nwords = rans.encode_lanes(sym_SxN, len_TxL.reshape(-1), freq, prob_bits)
    nwords_TxL = nwords.reshape(T, L)
    tile_len = 2 * nwords_TxL.sum(axis=1)
    tile_off = np.concatenate([[0], np.cumsum(tile_len)[:-1]])
    table = _pack_table(freq)
    index = np.stack([tile_off, tile_len, sizes], axis=1).astype("<u4").tobytes() + nwords_TxL.astype("<u2").tobytes()
    payload = words.astype("<u2").tobytes()
    if allow_raw and len(table) + len(index) + len(payload) >= u2.size:
        return _assemble(geom, CODING_RAW, PRED_NONE, b"", b"", u2.tobytes())
    return _assemble(geom, CODING_RANS, PREDICTORS[pred_name], table, index, payload)


def _pack_table(freq: np.ndarray) -> bytes:
    """32-byte presence bitmap, 1 byte bit width w, then (f - 1) of each present symbol in w bits
    (LSB first, ascending symbol order, zero-padded to a byte)."""
    present = freq > 0
    bitmap = np.packbits(present.astype(np.uint8), bitorder="little").tobytes()
    v = (freq[present] - 1).astype(np.int64)
    w = int(v.max()).bit_length()
    bits = ((v[:, None] >> np.arange(w)[None, :]) & 1).astype(np.uint8).reshape(-1)
    return bitmap + bytes([w]) + np.packbits(bits, bitorder="little").tobytes()


def _assemble(geom: dict, coding: int, predictor: int, table: bytes, index: bytes, payload: bytes) -> bytes:
    shape = geom["shape"]
    t_off = HEADER_SIZE
    i_off = t_off + len(table)
    p_off = i_off + len(index)
    if p_off + len(payload) >= 1 << 32:
        raise ShapeError("layer blob would exceed 4 GiB")
    fields = [
        MAGIC,
        VERSION,
        HEADER_SIZE,
        DTYPE_CODES[np.dtype(geom["dtype"])],
        len(shape),
        coding,
        predictor,
        geom["prob_bits"],
        0,
        geom["lanes"],
        geom["rows"],
        geom["cols"],
        geom["tile_rows"],
        geom["tile_cols"],
        geom["n_tiles"],
        t_off,
        len(table),
        i_off,
        len(index),
        p_off,
        len(payload),
        geom["raw_crc"],
        geom["raw_sum1"],
        geom["raw_sum2"],
        zlib.crc32(payload),
        0,
    ]
    hdr = bytearray(_HDR.pack(*fields))
    meta_crc = zlib.crc32(table + index, zlib.crc32(bytes(hdr[:-4])))
    struct.pack_into("<I", hdr, HEADER_SIZE - 4, meta_crc)
    return bytes(hdr) + table + index + payload


# ---------------------------------------------------------------------------------------------------
# parsing and validation (shared by all decoders)


def parse_header(blob) -> LayerHeader:
    """Parse and validate the fixed header (not the CRCs of table/index/payload)."""
    mv = memoryview(blob).cast("B") if not isinstance(blob, bytes) else memoryview(blob)
    if len(mv) < HEADER_SIZE:
        raise CodecError(f"blob of {len(mv)} bytes is shorter than the {HEADER_SIZE}-byte header")
    f = _HDR.unpack_from(mv, 0)
    (
        magic,
        version,
        hsize,
        dtc,
        ndim,
        coding,
        pred,
        pb,
        resv,
        lanes,
        rows,
        cols,
        tr,
        tc,
        T,
        t_off,
        t_size,
        i_off,
        i_size,
        p_off,
        p_size,
        rcrc,
        s1,
        s2,
        pcrc,
        mcrc,
    ) = f
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r} (expected {MAGIC!r}): not a jaxsys layer blob")
    if version != VERSION:
        raise CodecError(f"unsupported layer format version {version} (this build reads {VERSION})")
    if hsize != HEADER_SIZE:
        raise CodecError(f"header size field {hsize} != {HEADER_SIZE}")
    if dtc not in DTYPES:
        raise CodecError(f"unknown dtype code {dtc}")
    if ndim not in (1, 2):
        raise CodecError(f"ndim {ndim} not in (1, 2)")
    if coding not in (CODING_RANS, CODING_RAW):
        raise CodecError(f"unknown coding {coding}")
    if pred not in PREDICTOR_NAMES:
        raise CodecError(f"unknown predictor code {pred}")
    if resv != 0:
        raise CodecError(f"reserved header byte is {resv}, expected 0")
    if not (rans.MIN_PROB_BITS <= pb <= rans.MAX_PROB_BITS):
        raise CodecError(f"prob_bits {pb} outside 12..16")
    if not (1 <= lanes <= MAX_LANES):
        raise CodecError(f"lanes {lanes} outside 1..{MAX_LANES}")
    if rows < 1 or cols < 1 or rows * cols > MAX_ELEMENTS:
        raise CodecError(f"shape {rows}x{cols} is empty or exceeds {MAX_ELEMENTS} elements")
    if ndim == 1 and (rows != 1 or tr != 1):
        raise CodecError("1-D tensor must have rows == tile_rows == 1")
    if tr < 1 or tc < 1:
        raise CodecError(f"tile shape {tr}x{tc} is not positive")
    if T != (-(-rows // tr)) * (-(-cols // tc)):
        raise CodecError(f"tile count {T} does not match shape {rows}x{cols} with tiles {tr}x{tc}")
    if coding == CODING_RAW and (t_size or i_size or pred != PRED_NONE or p_size != rows * cols):
        raise CodecError(
            f"raw-coded layer must have no table/index, predictor none and payload_size == {rows * cols} (got {p_size})"
        )
    if t_off != HEADER_SIZE or i_off != t_off + t_size or p_off != i_off + i_size:
        raise CodecError(
            f"section offsets do not add up: table@{t_off}+{t_size}, index@{i_off}+{i_size}, payload@{p_off}"
        )
    if p_off + p_size != len(mv):
        raise CodecError(f"blob length {len(mv)} != payload end {p_off + p_size} (truncated or trailing bytes)")
    shape = (cols,) if ndim == 1 else (rows, cols)
    h = LayerHeader(
        DTYPES[dtc],
        shape,
        rows,
        cols,
        tr,
        tc,
        T,
        lanes,
        pb,
        coding,
        pred,
        t_off,
        t_size,
        i_off,
        i_size,
        p_off,
        p_size,
        rcrc,
        s1,
        s2,
        pcrc,
        mcrc,
    )
    if coding == CODING_RANS and h.steps > MAX_LANE_SYMBOLS:
        raise CodecError(f"{h.steps} symbols per lane exceeds {MAX_LANE_SYMBOLS}")
    return h


def parse_layer(blob, check_crc: bool = True) -> ParsedLayer:
    """Parse and fully validate a blob: header, CRCs, frequency table and tile index."""
    mv = memoryview(blob)
    h = parse_header(mv)
    if check_crc:
        meta = zlib.crc32(mv[h.table_off : h.payload_off], zlib.crc32(mv[: HEADER_SIZE - 4]))
        if meta != h.meta_crc:
            raise CodecError(f"header/table/index CRC mismatch ({meta:#010x} != {h.meta_crc:#010x})")
        pc = zlib.crc32(mv[h.payload_off :])
        if pc != h.payload_crc:
            raise CodecError(f"payload CRC mismatch ({pc:#010x} != {h.payload_crc:#010x})")
    payload = mv[h.payload_off :]
    if h.coding == CODING_RAW:
        z = np.zeros(0, np.int64)
        return ParsedLayer(h, np.zeros(256, np.int64), z, z, z, np.zeros((0, h.lanes), np.int64), payload)
    freq = _parse_table(mv[h.table_off : h.index_off], h.prob_bits)
    T, L = h.n_tiles, h.lanes
    need = T * TILE_ENTRY.size + T * L * 2
    if h.index_size != need:
        raise CodecError(f"tile index is {h.index_size} bytes, expected {need} for {T} tiles x {L} lanes")
    ib = mv[h.index_off : h.payload_off]
    ent = np.frombuffer(ib[: T * 12], dtype="<u4").reshape(T, 3).astype(np.int64)
    lw = np.frombuffer(ib[T * 12 :], dtype="<u2").reshape(T, L).astype(np.int64)
    off, ln, nsym = ent[:, 0], ent[:, 1], ent[:, 2]
    sizes = tile_sizes(h.rows, h.cols, h.tile_rows, h.tile_cols)
    bad = np.nonzero(nsym != sizes)[0]
    if len(bad):
        t = int(bad[0])
        raise CodecError(f"tile {t}: symbol count {nsym[t]} != {sizes[t]} implied by the shape")
    exp_off = np.concatenate([[0], np.cumsum(ln)[:-1]])
    bad = np.nonzero(off != exp_off)[0]
    if len(bad):
        t = int(bad[0])
        raise CodecError(f"tile {t}: offset {off[t]} != {exp_off[t]} (tiles must be contiguous)")
    if int(ln.sum()) != h.payload_size:
        raise CodecError(f"tile lengths sum to {int(ln.sum())} != payload size {h.payload_size}")
    bad = np.nonzero(2 * lw.sum(axis=1) != ln)[0]
    if len(bad):
        t = int(bad[0])
        raise CodecError(f"tile {t}: lane word counts sum to {2 * lw[t].sum()} bytes != length {ln[t]}")
    lane_sym = np.maximum(0, -(-(sizes[:, None] - np.arange(L)[None, :]) // L))
    bad = np.argwhere((lw < 2) | (lw > lane_sym + 2))
    if len(bad):
        t, l = (int(v) for v in bad[0])
        raise CodecError(f"tile {t} lane {l}: {lw[t, l]} words is impossible for {lane_sym[t, l]} symbols")
    return ParsedLayer(h, freq, off, ln, nsym, lw, payload)


def _parse_table(tb: memoryview, prob_bits: int) -> np.ndarray:
    if len(tb) < 33:
        raise CodecError(f"frequency table of {len(tb)} bytes is shorter than its 33-byte preamble")
    present = np.unpackbits(np.frombuffer(tb[:32], np.uint8), bitorder="little").astype(bool)
    k = int(present.sum())
    w = tb[32]
    if k == 0:
        raise CodecError("frequency table has no symbols")
    if w > 16:
        raise CodecError(f"frequency table bit width {w} exceeds 16")
    need = 33 + (k * w + 7) // 8
    if len(tb) != need:
        raise CodecError(f"frequency table is {len(tb)} bytes, expected {need} for {k} symbols of {w} bits")
    bits = np.unpackbits(np.frombuffer(tb[33:], np.uint8), bitorder="little")[: k * w].reshape(k, w)
    freq = np.zeros(256, np.int64)
    freq[present] = (bits.astype(np.int64) << np.arange(w)[None, :]).sum(axis=1) + 1
    if int(freq.sum()) != 1 << prob_bits:
        raise CodecError(f"frequencies sum to {int(freq.sum())}, expected 2^{prob_bits}")
    return freq


def lane_layout(p: ParsedLayer):
    """Per-lane (base word index, word count, symbol count) in tile-major lane order."""
    h = p.header
    L = h.lanes
    nw = p.lane_words.reshape(-1)
    base = np.concatenate([[0], np.cumsum(nw)[:-1]]).astype(np.int64)
    lens = np.maximum(0, -(-(p.tile_nsym[:, None] - np.arange(L)[None, :]) // L)).reshape(-1)
    return base, nw, lens


def _finish_host(p: ParsedLayer, tiles_sym: np.ndarray) -> np.ndarray:
    h = p.header
    if h.predictor == PRED_DELTA:
        tiles_sym = delta_inverse(tiles_sym)
    u2 = from_tiles(tiles_sym, h.rows, h.cols, h.tile_rows, h.tile_cols)
    if zlib.crc32(u2.tobytes()) != h.raw_crc:
        raise CodecError("decoded data fails the raw CRC32 (corrupted stream)")
    return u2.view(h.dtype).reshape(h.shape)


def decode_layer_numpy(blob) -> np.ndarray:
    """Host decoder, vectorised over all lanes (mirrors the JAX kernel)."""
    p = parse_layer(blob)
    h = p.header
    if h.coding == CODING_RAW:
        u2 = np.frombuffer(p.payload, np.uint8).reshape(h.rows, h.cols).copy()
        return _check_raw(p, u2)
    words = np.frombuffer(p.payload, dtype="<u2")
    base, nw, lens = lane_layout(p)
    sym_SxN, ok = rans.decode_lanes_numpy(words, base, nw, lens, p.freq, h.prob_bits)
    if not ok.all():
        n = int(np.argmin(ok))
        raise CodecError(
            f"tile {n // h.lanes} lane {n % h.lanes}: rANS stream inconsistent (final state or word count)"
        )
    T, L, S = h.n_tiles, h.lanes, h.steps
    tiles = sym_SxN.reshape(S, T, L).transpose(1, 0, 2).reshape(T, S * L)[:, : h.tile_max]
    return _finish_host(p, np.ascontiguousarray(tiles))


def _check_raw(p: ParsedLayer, u2: np.ndarray) -> np.ndarray:
    h = p.header
    if zlib.crc32(u2.tobytes()) != h.raw_crc:
        raise CodecError("raw layer fails the raw CRC32")
    return u2.view(h.dtype).reshape(h.shape)


def decode_layer_reference(blob) -> np.ndarray:
    """Plain scalar reference decoder: one lane at a time, Python integers, linear symbol search."""
    p = parse_layer(blob)
    h = p.header
    if h.coding == CODING_RAW:
        return _check_raw(p, np.frombuffer(p.payload, np.uint8).reshape(h.rows, h.cols).copy())
    words = np.frombuffer(p.payload, dtype="<u2")
    base, nw, lens = lane_layout(p)
    T, L = h.n_tiles, h.lanes
    tiles = np.zeros((T, h.tile_max), np.uint8)
    for t in range(T):
        for l in range(L):
            n = t * L + l
            try:
                syms = rans.decode_lane_scalar(words, int(base[n]), int(nw[n]), int(lens[n]), p.freq, h.prob_bits)
            except ValueError as e:
                raise CodecError(f"tile {t} lane {l}: {e}") from None
            tiles[t, l : l + L * len(syms) : L] = syms
    return _finish_host(p, tiles)


def layer_info(blob) -> dict:
    """Header summary of a blob (validated)."""
    p = parse_layer(blob)
    h = p.header
    n = h.rows * h.cols
    return {
        "dtype": str(h.dtype),
        "shape": list(h.shape),
        "tile": [h.tile_rows, h.tile_cols],
        "tiles": h.n_tiles,
        "lanes": h.lanes,
        "prob_bits": h.prob_bits,
        "coding": "rans" if h.coding == CODING_RANS else "raw",
        "predictor": PREDICTOR_NAMES[h.predictor],
        "raw_bytes": n,
        "blob_bytes": len(blob),
        "ratio": n / len(blob),
        "bits_per_symbol": 8 * len(blob) / n,
    }
