"""The layer blob: a self-describing, versioned, little-endian container for one int8/uint8 tensor.

    [header (80 B) | frequency table (bitmap coding) | tile index | tile data]

Header fields are listed once in `HEADER` (name and struct code, in file order). Tile index: per tile
(offset from the payload start, byte length, symbol count) as u32, then the T x L lane word counts (u16).
Tile data: the lanes' 16-bit word streams, tile-major, lane order.

Encoding (numpy, two passes): tile the array, apply the predictor per tile, build one global histogram
(the predictor with the lower order-0 entropy wins), normalise it to 2^prob_bits, then encode all tiles'
lanes in lock-step with the shared table. A float tensor's byte planes and any other dtype's bytes are
stored as layer blobs; int8 tensors of a model go to one shared-table group blob (group.py).
Every structural problem of a blob raises `CodecError` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from jaxsys.codec import rans
from jaxsys.codec import tiles as tl
from jaxsys.codec.errors import CodecError
from jaxsys.codec.layout import Layout
from jaxsys.codec.tables import check_prob_bits, pack_bitmap_table, parse_bitmap_table
from jaxsys.codec.tiles import DTYPE_CODES, DTYPES, PRED_DELTA, PRED_NONE, PREDICTOR_NAMES, PREDICTORS  # noqa: F401
from jaxsys.errors import ShapeError

__all__ = ["CodecError", "encode_layer", "parse_header", "parse_layer", "decode_layer_numpy", "layer_info"]

MAGIC = b"JXRL"
VERSION = 1
CODING_RANS, CODING_RAW = 0, 1
HEADER = Layout(
    ("magic", "4s"),
    ("version", "H"),
    ("header_size", "H"),
    ("dtype", "B"),
    ("ndim", "B"),
    ("coding", "B"),
    ("predictor", "B"),
    ("prob_bits", "B"),
    ("reserved", "B"),
    ("lanes", "H"),
    ("rows", "I"),
    ("cols", "I"),
    ("tile_rows", "I"),
    ("tile_cols", "I"),
    ("n_tiles", "I"),
    ("table_off", "I"),
    ("table_size", "I"),
    ("index_off", "I"),
    ("index_size", "I"),
    ("payload_off", "I"),
    ("payload_size", "I"),
    ("raw_crc", "I"),  # CRC32 of the raw bytes (row-major)
    ("raw_sum1", "I"),  # sum of raw bytes mod 2^32 (checkable on device)
    ("raw_sum2", "I"),  # sum of (i + 1) * byte_i mod 2^32
    ("payload_crc", "I"),  # CRC32 of the tile data
    ("meta_crc", "I"),  # CRC32 of the header (without this field), table and index
)
HEADER_SIZE = HEADER.size  # 80 bytes
TILE_ENTRY = 12  # u32 offset (from the payload start), u32 byte length, u32 symbol count


@dataclasses.dataclass(frozen=True)
class LayerHeader:
    """One tensor's geometry and coding (a layer blob's header; a group member uses the same terms)."""

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
    raw_crc: int  # CRC32 of the raw bytes
    table_off: int = 0  # section offsets and sizes (layer blobs only)
    table_size: int = 0
    index_off: int = 0
    index_size: int = 0
    payload_off: int = 0
    payload_size: int = 0
    raw_sum1: int = 0  # positional checksum (layer blobs only)
    raw_sum2: int = 0
    payload_crc: int = 0
    meta_crc: int = 0

    @property
    def tile_max(self) -> int:
        return min(self.tile_rows, self.rows) * min(self.tile_cols, self.cols)

    @property
    def steps(self) -> int:
        return -(-self.tile_max // self.lanes)

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def tile_sizes(self) -> np.ndarray:
        return tl.tile_sizes(self.rows, self.cols, self.tile_rows, self.tile_cols)


@dataclasses.dataclass(frozen=True)
class ParsedLayer:
    header: LayerHeader
    freq: np.ndarray  # (256,) int64, sums to 2^prob_bits (zeros for raw coding)
    tile_off: np.ndarray  # (T,) byte offset of each tile from the payload start
    tile_len: np.ndarray  # (T,) byte length
    tile_nsym: np.ndarray  # (T,) symbols
    lane_words: np.ndarray  # (T, L) words per lane
    payload: memoryview  # tile data bytes


def check_geometry(rows, cols, tr, tc, lanes, one_d: bool, where: str) -> None:
    """Shape, tile and lane checks shared by layer and group parsers."""
    if rows < 1 or cols < 1 or rows * cols > tl.MAX_ELEMENTS:
        raise CodecError(f"{where}shape {rows}x{cols} is empty or exceeds {tl.MAX_ELEMENTS} elements")
    if one_d and (rows != 1 or tr != 1):
        raise CodecError(f"{where}1-D tensor must have rows == tile_rows == 1")
    if tr < 1 or tc < 1:
        raise CodecError(f"{where}tile shape {tr}x{tc} is not positive")
    if not (1 <= lanes <= tl.MAX_LANES):
        raise CodecError(f"{where}lanes {lanes} outside 1..{tl.MAX_LANES}")


def check_lane_words(lw: np.ndarray, sizes: np.ndarray, lanes: int, where: str) -> None:
    """Each lane holds its 2-word final state and at most one word per symbol."""
    lane_sym = tl.lane_symbols(sizes, lanes)
    bad = np.argwhere((lw < 2) | (lw > lane_sym + 2))
    if len(bad):
        t, lane = (int(v) for v in bad[0])
        raise CodecError(
            f"{where}tile {t} lane {lane}: {lw[t, lane]} words is impossible for {lane_sym[t, lane]} symbols"
        )


# ---------------------------------------------------------------------------------------------------
# encoder


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
    x = tl.check_array(x)
    prob_bits = check_prob_bits(prob_bits)
    tr, tc = tl.check_coder_args(lanes, predictor, tile_shape)
    u2, tr, tc = tl.as_rows(x, tr, tc)
    rows, cols = u2.shape
    P = min(tr, rows) * min(tc, cols)
    L = tl.lane_count(P, lanes, min_lane_symbols)
    sizes = tl.tile_sizes(rows, cols, tr, tc)
    tiles = tl.to_tiles(u2, tr, tc)
    valid = np.arange(P)[None, :] < sizes[:, None]
    pred, sym_t, counts = tl.best_predictor(tiles, valid, predictor)
    s1, s2 = tl.raw_sums(u2)
    geom = dict(
        dtype=DTYPE_CODES[x.dtype],
        ndim=x.ndim,
        prob_bits=prob_bits,
        lanes=L,
        rows=rows,
        cols=cols,
        tile_rows=tr,
        tile_cols=tc,
        n_tiles=len(sizes),
        raw_crc=zlib.crc32(u2.tobytes()),
        raw_sum1=s1,
        raw_sum2=s2,
    )
    freq = rans.normalize_freqs(counts, prob_bits)
    sym_SxN = np.ascontiguousarray(tl.interleave(sym_t, sizes, L, -(-P // L), int(np.argmax(freq))))
    words, nwords = rans.encode_lanes(sym_SxN, tl.lane_symbols(sizes, L).reshape(-1), freq, prob_bits)
    nwords_TxL = nwords.reshape(len(sizes), L)
    tile_len = 2 * nwords_TxL.sum(axis=1)
    tile_off = np.concatenate([[0], np.cumsum(tile_len)[:-1]])
    table = pack_bitmap_table(freq)
    entries = np.stack([tile_off, tile_len, sizes], axis=1).astype("<u4").tobytes()
    index = entries + nwords_TxL.astype("<u2").tobytes()
    payload = words.astype("<u2").tobytes()
    if allow_raw and len(table) + len(index) + len(payload) >= u2.size:
        return _assemble(geom, CODING_RAW, PRED_NONE, b"", b"", u2.tobytes())
    return _assemble(geom, CODING_RANS, pred, table, index, payload)


def _assemble(geom: dict, coding: int, predictor: int, table: bytes, index: bytes, payload: bytes) -> bytes:
    t_off = HEADER_SIZE
    i_off = t_off + len(table)
    p_off = i_off + len(index)
    if p_off + len(payload) >= 1 << 32:
        raise ShapeError("layer blob would exceed 4 GiB")
    fields = dict(
        geom,
        magic=MAGIC,
        version=VERSION,
        header_size=HEADER_SIZE,
        coding=coding,
        predictor=predictor,
        reserved=0,
        table_off=t_off,
        table_size=len(table),
        index_off=i_off,
        index_size=len(index),
        payload_off=p_off,
        payload_size=len(payload),
        payload_crc=zlib.crc32(payload),
        meta_crc=0,
    )
    hdr = HEADER.pack(**fields)[:-4]
    meta_crc = zlib.crc32(table + index, zlib.crc32(hdr))
    return hdr + meta_crc.to_bytes(4, "little") + table + index + payload


# ---------------------------------------------------------------------------------------------------
# parsing and validation (shared by all decoders)


def parse_header(blob) -> LayerHeader:
    """Parse and validate the fixed header (not the CRCs of table/index/payload)."""
    mv = memoryview(blob).cast("B")
    if len(mv) < HEADER_SIZE:
        raise CodecError(f"blob of {len(mv)} bytes is shorter than the {HEADER_SIZE}-byte header")
    f = HEADER.unpack(mv)
    if f["magic"] != MAGIC:
        raise CodecError(f"bad magic {f['magic']!r} (expected {MAGIC!r}): not a jaxsys layer blob")
    if f["version"] != VERSION:
        raise CodecError(f"unsupported layer format version {f['version']} (this build reads {VERSION})")
    if f["header_size"] != HEADER_SIZE:
        raise CodecError(f"header size field {f['header_size']} != {HEADER_SIZE}")
    if f["dtype"] not in DTYPES:
        raise CodecError(f"unknown dtype code {f['dtype']}")
    if f["ndim"] not in (1, 2):
        raise CodecError(f"ndim {f['ndim']} not in (1, 2)")
    if f["coding"] not in (CODING_RANS, CODING_RAW):
        raise CodecError(f"unknown coding {f['coding']}")
    if f["predictor"] not in PREDICTOR_NAMES:
        raise CodecError(f"unknown predictor code {f['predictor']}")
    if f["reserved"] != 0:
        raise CodecError(f"reserved header byte is {f['reserved']}, expected 0")
    if not (rans.MIN_PROB_BITS <= f["prob_bits"] <= rans.MAX_PROB_BITS):
        raise CodecError(f"prob_bits {f['prob_bits']} outside 12..16")
    rows, cols, tr, tc = f["rows"], f["cols"], f["tile_rows"], f["tile_cols"]
    check_geometry(rows, cols, tr, tc, f["lanes"], f["ndim"] == 1, "")
    if f["n_tiles"] != np.prod(tl.grid(rows, cols, tr, tc)):
        raise CodecError(f"tile count {f['n_tiles']} does not match shape {rows}x{cols} with tiles {tr}x{tc}")
    t_off, t_size, i_off, i_size = f["table_off"], f["table_size"], f["index_off"], f["index_size"]
    p_off, p_size = f["payload_off"], f["payload_size"]
    if f["coding"] == CODING_RAW and (t_size or i_size or f["predictor"] != PRED_NONE or p_size != rows * cols):
        raise CodecError(
            f"raw-coded layer must have no table/index, predictor none and payload_size == {rows * cols} (got {p_size})"
        )
    if t_off != HEADER_SIZE or i_off != t_off + t_size or p_off != i_off + i_size:
        raise CodecError(
            f"section offsets do not add up: table@{t_off}+{t_size}, index@{i_off}+{i_size}, payload@{p_off}"
        )
    if p_off + p_size != len(mv):
        raise CodecError(f"blob length {len(mv)} != payload end {p_off + p_size} (truncated or trailing bytes)")
    drop = ("magic", "version", "header_size", "ndim", "reserved", "dtype")
    h = LayerHeader(
        dtype=DTYPES[f["dtype"]],
        shape=(cols,) if f["ndim"] == 1 else (rows, cols),
        **{k: v for k, v in f.items() if k not in drop},
    )
    if h.coding == CODING_RANS and h.steps > tl.MAX_LANE_SYMBOLS:
        raise CodecError(f"{h.steps} symbols per lane exceeds {tl.MAX_LANE_SYMBOLS}")
    return h


def parse_layer(blob, check_crc: bool = True) -> ParsedLayer:
    """Parse and fully validate a blob: header, CRCs, frequency table and tile index."""
    mv = memoryview(blob).cast("B")
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
    freq = parse_bitmap_table(mv[h.table_off : h.index_off], h.prob_bits)
    T, L = h.n_tiles, h.lanes
    need = T * TILE_ENTRY + T * L * 2
    if h.index_size != need:
        raise CodecError(f"tile index is {h.index_size} bytes, expected {need} for {T} tiles x {L} lanes")
    ib = mv[h.index_off : h.payload_off]
    ent = np.frombuffer(ib[: T * TILE_ENTRY], dtype="<u4").reshape(T, 3).astype(np.int64)
    lw = np.frombuffer(ib[T * TILE_ENTRY :], dtype="<u2").reshape(T, L).astype(np.int64)
    off, ln, nsym = ent[:, 0], ent[:, 1], ent[:, 2]
    sizes = h.tile_sizes()
    for what, got, want in (("symbol count", nsym, sizes), ("offset", off, np.concatenate([[0], np.cumsum(ln)[:-1]]))):
        bad = np.nonzero(got != want)[0]
        if len(bad):
            t = int(bad[0])
            raise CodecError(f"tile {t}: {what} {got[t]} != {want[t]} (implied by the shape; tiles are contiguous)")
    if int(ln.sum()) != h.payload_size:
        raise CodecError(f"tile lengths sum to {int(ln.sum())} != payload size {h.payload_size}")
    bad = np.nonzero(2 * lw.sum(axis=1) != ln)[0]
    if len(bad):
        t = int(bad[0])
        raise CodecError(f"tile {t}: lane word counts sum to {2 * lw[t].sum()} bytes != length {ln[t]}")
    check_lane_words(lw, sizes, L, "")
    return ParsedLayer(h, freq, off, ln, nsym, lw, payload)


def lane_layout(p: ParsedLayer):
    """Per-lane (base word index, word count, symbol count) in tile-major lane order."""
    nw = p.lane_words.reshape(-1)
    base = np.concatenate([[0], np.cumsum(nw)[:-1]]).astype(np.int64)
    return base, nw, tl.lane_symbols(p.tile_nsym, p.header.lanes).reshape(-1)


# ---------------------------------------------------------------------------------------------------
# host decoders


def finish_tiles(h: LayerHeader, tiles_sym: np.ndarray, where: str = "") -> np.ndarray:
    """Decoded tile symbols -> the tensor: undo the predictor, untile, check the raw CRC32."""
    if h.predictor == PRED_DELTA:
        tiles_sym = tl.delta_inverse(tiles_sym)
    return check_raw(h, tl.from_tiles(tiles_sym, h.rows, h.cols, h.tile_rows, h.tile_cols), where)


def check_raw(h: LayerHeader, u2: np.ndarray, where: str = "") -> np.ndarray:
    if zlib.crc32(u2) != h.raw_crc:
        raise CodecError(f"{where}decoded data fails the raw CRC32 (corrupted stream or metadata)")
    return u2.view(h.dtype).reshape(h.shape)


def _raw_layer(p: ParsedLayer) -> np.ndarray:
    h = p.header
    return check_raw(h, np.frombuffer(p.payload, np.uint8).reshape(h.rows, h.cols).copy())


def decode_layer_numpy(blob) -> np.ndarray:
    """Host decoder, vectorised over all lanes (mirrors the JAX kernel)."""
    p = parse_layer(blob)
    h = p.header
    if h.coding == CODING_RAW:
        return _raw_layer(p)
    base, nw, lens = lane_layout(p)
    sym_SxN, ok = rans.decode_lanes_numpy(np.frombuffer(p.payload, dtype="<u2"), base, nw, lens, p.freq, h.prob_bits)
    if not ok.all():
        n = int(np.argmin(ok))
        raise CodecError(
            f"tile {n // h.lanes} lane {n % h.lanes}: rANS stream inconsistent (final state or word count)"
        )
    return finish_tiles(h, tl.deinterleave(sym_SxN, h.n_tiles, h.lanes, h.steps, h.tile_max))


def decode_layer_reference(blob) -> np.ndarray:
    """Plain scalar reference decoder: one lane at a time, Python integers, linear symbol search."""
    p = parse_layer(blob)
    h = p.header
    if h.coding == CODING_RAW:
        return _raw_layer(p)
    words = np.frombuffer(p.payload, dtype="<u2")
    base, nw, lens = lane_layout(p)
    T, L = h.n_tiles, h.lanes
    tiles = np.zeros((T, h.tile_max), np.uint8)
    for t in range(T):
        for lane in range(L):
            n = t * L + lane
            try:
                syms = rans.decode_lane_scalar(words, int(base[n]), int(nw[n]), int(lens[n]), p.freq, h.prob_bits)
            except ValueError as e:
                raise CodecError(f"tile {t} lane {lane}: {e}") from None
            tiles[t, lane : lane + L * len(syms) : L] = syms
    return finish_tiles(h, tiles)


def layer_info(blob) -> dict:
    """Header summary of a blob (validated)."""
    h = parse_layer(blob).header
    n = h.size
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
