"""Group blob: many int8/uint8 tensors coded with ONE shared rANS table.

A layer blob (format.py) carries its own 80-byte header and frequency table; on a small model (64x64
matrices) those, plus the per-lane state and word count of each layer, cost more than entropy coding
gains. A group blob codes all int8 tensors of a model (or any list of tensors) with one frequency
table, built from their pooled symbols, and one header; per tensor it stores only a few varint bytes
of geometry, its raw CRC32 and its lanes (flushed state + word count):

    [header (40 B) | shared table | directory | lane index | payload]

Header fields: `HEADER` below (the blob ends exactly at the payload end; the word count is the u16
words of the payload's word region; the meta CRC covers header bytes 0..35 + table + directory +
index). Table: `tables.pack_shared_table`. Directory, per tensor: unsigned LEB128 varints flags, rows,
cols, tile_rows, tile_cols, lanes, then the CRC32 of the tensor's raw bytes (u32). flags: bit 0 dtype
int8 (else uint8), bit 1 1-D, bit 2 predictor delta, bit 3 stored raw (bits 4..7 zero).
Index: for each rANS-coded tensor in directory order, its T x L lane word counts (u16, tile-major).
Payload: first the word region (all rANS tensors' lane streams, directory order, tile-major, lane
order, u16), then the raw tensors' bytes (directory order).

Tiles, lanes, predictors and lane streams are exactly those of a layer blob, so every decoder reuses
the same kernels: a group (or any subset of its tensors) is ONE set of independent lanes.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from jaxsys.codec import format as fmt
from jaxsys.codec import rans
from jaxsys.codec import tiles as tl
from jaxsys.codec.errors import CodecError
from jaxsys.codec.layout import Layout
from jaxsys.codec.tables import choose_table, pack_shared_table, parse_shared_table
from jaxsys.errors import ConfigError

MAGIC = b"JXRG"
VERSION = 2
HEADER = Layout(
    ("magic", "4s"),
    ("version", "H"),
    ("header_size", "H"),
    ("n_tensors", "H"),
    ("prob_bits", "B"),
    ("reserved", "B"),
    ("table_size", "I"),
    ("directory_size", "I"),
    ("index_size", "I"),
    ("payload_size", "I"),
    ("n_words", "I"),
    ("payload_crc", "I"),
    ("meta_crc", "I"),
)
HEADER_SIZE = HEADER.size  # 40
MAX_TENSORS = 65535
F_INT8, F_1D, F_DELTA, F_RAW = 1, 2, 4, 8
DIRECTORY_FIELDS = ("flags", "rows", "cols", "tile_rows", "tile_cols", "lanes")


@dataclasses.dataclass(frozen=True)
class Member:
    header: fmt.LayerHeader  # geometry in layer-blob terms (section fields unused, 0)
    lane_words: np.ndarray  # (T, L) words per lane (empty for raw)
    word_base: int  # first word of this tensor in the word region
    raw_off: int  # byte offset of a raw tensor inside the payload

    @property
    def n_lanes(self) -> int:
        return 0 if self.header.coding == fmt.CODING_RAW else self.header.n_tiles * self.header.lanes

    def lanes(self):
        """(base word index in the word region, words, symbols) per lane of a rANS member."""
        h = self.header
        nw = self.lane_words.reshape(-1)
        base = self.word_base + np.concatenate([[0], np.cumsum(nw)[:-1]]).astype(np.int64)
        return base, nw, tl.lane_symbols(h.tile_sizes(), h.lanes).reshape(-1)

    def coded_bytes(self) -> int:
        """Bytes of this member in the blob (payload words + lane counts, or raw bytes)."""
        if self.header.coding == fmt.CODING_RAW:
            return self.header.size
        return 2 * int(self.lane_words.sum()) + 2 * self.lane_words.size


@dataclasses.dataclass(frozen=True)
class ParsedGroup:
    prob_bits: int
    freq: np.ndarray  # (256,) shared frequencies
    members: tuple  # Member per tensor
    n_words: int  # u16 words in the word region
    payload: memoryview

    def select(self, which=None) -> list[int]:
        """Member indices `which` (default: all), checked."""
        n = len(self.members)
        out = []
        for k in range(n) if which is None else which:
            if not 0 <= int(k) < n:
                raise CodecError(f"group has {n} tensors, no tensor {k}")
            out.append(int(k))
        return out

    def words(self) -> np.ndarray:
        return np.frombuffer(self.payload[: 2 * self.n_words], "<u2")

    def raw_bytes(self, k: int) -> np.ndarray:
        m = self.members[k]
        return np.frombuffer(self.payload[m.raw_off : m.raw_off + m.header.size], np.uint8)


def uleb(v: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def read_uleb(mv, pos: int, end: int, what: str) -> tuple[int, int]:
    v, shift = 0, 0
    while True:
        if pos >= end:
            raise CodecError(f"directory truncated while reading {what}")
        b = mv[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7
        if shift > 35:
            raise CodecError(f"directory varint for {what} is too long")


# ---------------------------------------------------------------------------------------------------
# encoder


@dataclasses.dataclass
class _Prep:
    x: np.ndarray
    u2: np.ndarray
    tr: int
    tc: int
    lanes: int
    sizes: np.ndarray
    sym: np.ndarray  # (T, P) predictor output
    pred: int
    counts: np.ndarray


def _prep(x, tile_shape, lanes, predictor, min_lane_symbols) -> _Prep:
    x = tl.check_array(x)
    u2, tr, tc = tl.as_rows(x, *tile_shape)
    rows, cols = u2.shape
    tr, tc = min(tr, rows), min(tc, cols)  # canonical: a tile never exceeds the tensor
    L = tl.lane_count(tr * tc, lanes, min_lane_symbols)
    sizes = tl.tile_sizes(rows, cols, tr, tc)
    tiles = tl.to_tiles(u2, tr, tc)
    valid = np.arange(tr * tc)[None, :] < sizes[:, None]
    pred, sym, counts = tl.best_predictor(tiles, valid, predictor)
    return _Prep(x, u2, tr, tc, L, sizes, sym, pred, counts)


def encode_group(
    arrays,
    tile_shape=(256, 256),
    lanes: int = 32,
    prob_bits=None,
    predictor: str = "auto",
    min_lane_symbols: int = 0,
    allow_raw: bool = True,
) -> bytes:
    """Encode a list of int8/uint8 arrays (1-D or 2-D) into one group blob with a shared table.

    Args mirror `format.encode_layer`; prob_bits None picks the precision that minimises table +
    coded size. Each tensor keeps its own tiles, lanes and predictor (the lower order-0 entropy of
    its own symbols); a tensor whose coded form (words + lane counts) is not smaller than its raw
    bytes is stored raw. The table is built from the pooled symbols of the coded tensors.
    """
    arrays = list(arrays)
    if not arrays:
        raise ConfigError("encode_group needs at least one array")
    if len(arrays) > MAX_TENSORS:
        raise ConfigError(f"at most {MAX_TENSORS} tensors per group, got {len(arrays)}")
    tile_shape = tl.check_coder_args(lanes, predictor, tile_shape)
    preps = [_prep(x, tile_shape, lanes, predictor, min_lane_symbols) for x in arrays]
    coded = list(range(len(preps)))
    for _ in range(3):  # raw decisions change the pooled table; two passes settle it in practice
        counts = sum((preps[i].counts for i in coded), np.zeros(256, np.int64))
        if not coded:
            break
        pb, freq = choose_table(counts, prob_bits)
        streams = _encode_members([preps[i] for i in coded], freq, pb)
        keep = [i for i, (w, nw) in zip(coded, streams) if not allow_raw or 2 * len(w) + 2 * nw.size < preps[i].u2.size]
        if keep == coded:
            break
        coded = keep
    if not coded:
        pb, freq, streams = (prob_bits or 14), None, []
    table = pack_shared_table(freq) if freq is not None else b""
    by_idx = dict(zip(coded, streams))
    directory, index, words, raws = bytearray(), bytearray(), [], []
    for i, p in enumerate(preps):
        rows, cols = p.u2.shape
        raw = i not in by_idx
        flags = (
            (F_INT8 if p.x.dtype == np.int8 else 0)
            | (F_1D if p.x.ndim == 1 else 0)
            | (F_DELTA if (p.pred == tl.PRED_DELTA and not raw) else 0)
            | (F_RAW if raw else 0)
        )
        for v in (flags, rows, cols, p.tr, p.tc, p.lanes):
            directory += uleb(int(v))
        directory += struct.pack("<I", zlib.crc32(p.u2.tobytes()))
        if raw:
            raws.append(p.u2.tobytes())
        else:
            w, nw = by_idx[i]
            index += nw.astype("<u2").tobytes()
            words.append(w)
    wall = np.concatenate(words).astype("<u2") if words else np.zeros(0, "<u2")
    payload = wall.tobytes() + b"".join(raws)
    if len(payload) >= 1 << 32:
        raise ConfigError("group payload would exceed 4 GiB")
    meta = bytes(table) + bytes(directory) + bytes(index)
    hdr = HEADER.pack(
        magic=MAGIC,
        version=VERSION,
        header_size=HEADER_SIZE,
        n_tensors=len(preps),
        prob_bits=pb,
        reserved=0,
        table_size=len(table),
        directory_size=len(directory),
        index_size=len(index),
        payload_size=len(payload),
        n_words=len(wall),
        payload_crc=zlib.crc32(payload),
        meta_crc=0,
    )[:-4]
    return hdr + zlib.crc32(meta, zlib.crc32(hdr)).to_bytes(4, "little") + meta + payload


def _encode_members(preps, freq, pb):
    """All lanes of all tensors in one vectorised encoder call -> [(words, nwords (T, L))]."""
    fill = int(np.argmax(freq))
    S = max(-(-p.sym.shape[1] // p.lanes) for p in preps)
    cols = [tl.interleave(p.sym, p.sizes, p.lanes, S, fill) for p in preps]
    lens = [tl.lane_symbols(p.sizes, p.lanes).reshape(-1) for p in preps]
    sym_SxN = np.ascontiguousarray(np.concatenate(cols, axis=1))
    words, nwords = rans.encode_lanes(sym_SxN, np.concatenate(lens), freq, pb)
    out, wo, lo = [], 0, 0
    for p in preps:
        TL = len(p.sizes) * p.lanes
        nw = nwords[lo : lo + TL]
        n = int(nw.sum())
        out.append((words[wo : wo + n], nw.reshape(-1, p.lanes)))
        wo += n
        lo += TL
    return out


# ---------------------------------------------------------------------------------------------------
# parsing


def parse_group(blob, check_crc: bool = True) -> ParsedGroup:
    """Parse and fully validate a group blob (header, CRCs, table, directory, lane index)."""
    mv = memoryview(blob).cast("B")
    if len(mv) < HEADER_SIZE:
        raise CodecError(f"group blob of {len(mv)} bytes is shorter than the {HEADER_SIZE}-byte header")
    f = HEADER.unpack(mv)
    n, pb, n_words = f["n_tensors"], f["prob_bits"], f["n_words"]
    t_size, d_size, i_size, p_size = f["table_size"], f["directory_size"], f["index_size"], f["payload_size"]
    if f["magic"] != MAGIC:
        raise CodecError(f"bad magic {f['magic']!r} (expected {MAGIC!r}): not a jaxsys group blob")
    if f["version"] != VERSION:
        raise CodecError(f"unsupported group format version {f['version']} (this build reads {VERSION})")
    if f["header_size"] != HEADER_SIZE or f["reserved"] != 0:
        raise CodecError(f"header size {f['header_size']} / reserved {f['reserved']} invalid")
    if n < 1:
        raise CodecError("group holds no tensors")
    if not (rans.MIN_PROB_BITS <= pb <= rans.MAX_PROB_BITS):
        raise CodecError(f"prob_bits {pb} outside 12..16")
    end = HEADER_SIZE + t_size + d_size + i_size + p_size
    if end != len(mv):
        raise CodecError(f"blob length {len(mv)} != sections end {end} (truncated or trailing bytes)")
    if 2 * n_words > p_size:
        raise CodecError(f"word region of {n_words} words exceeds the {p_size}-byte payload")
    t0, d0 = HEADER_SIZE, HEADER_SIZE + t_size
    i0, p0 = d0 + d_size, d0 + d_size + i_size
    if check_crc:
        meta = zlib.crc32(mv[t0:p0], zlib.crc32(mv[: HEADER_SIZE - 4]))
        if meta != f["meta_crc"]:
            raise CodecError(f"header/table/directory/index CRC mismatch ({meta:#010x} != {f['meta_crc']:#010x})")
        if zlib.crc32(mv[p0:]) != f["payload_crc"]:
            raise CodecError("payload CRC mismatch")
    freq = parse_shared_table(mv[t0:d0], pb) if t_size else None
    members, pos, ipos, wbase, roff = [], d0, 0, 0, 2 * n_words
    idx = mv[i0:p0]
    for k in range(n):
        where = f"tensor {k}: "
        d = {}
        for what in DIRECTORY_FIELDS:
            d[what], pos = read_uleb(mv, pos, i0, f"tensor {k} {what}")
        if pos + 4 > i0:
            raise CodecError(f"directory truncated at tensor {k} raw CRC")
        (rcrc,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        flags, rows, cols, tr, tc, L = (d[w] for w in DIRECTORY_FIELDS)
        if flags & ~0xF:
            raise CodecError(f"{where}unknown flags {flags:#x}")
        raw = bool(flags & F_RAW)
        if raw and flags & F_DELTA:
            raise CodecError(f"{where}raw tensor with a predictor")
        fmt.check_geometry(rows, cols, tr, tc, L, bool(flags & F_1D), where)
        h = fmt.LayerHeader(
            dtype=np.dtype(np.int8 if flags & F_INT8 else np.uint8),
            shape=(cols,) if flags & F_1D else (rows, cols),
            rows=rows,
            cols=cols,
            tile_rows=tr,
            tile_cols=tc,
            n_tiles=int(np.prod(tl.grid(rows, cols, tr, tc))),
            lanes=L,
            prob_bits=pb,
            coding=fmt.CODING_RAW if raw else fmt.CODING_RANS,
            predictor=tl.PRED_DELTA if flags & F_DELTA else tl.PRED_NONE,
            raw_crc=rcrc,
        )
        if raw:
            if roff + h.size > p_size:
                raise CodecError(f"{where}raw bytes run past the payload")
            members.append(Member(h, np.zeros((0, L), np.int64), 0, roff))
            roff += h.size
            continue
        if freq is None:
            raise CodecError(f"tensor {k} is rANS-coded but the group has no table")
        if h.steps > tl.MAX_LANE_SYMBOLS:
            raise CodecError(f"{where}{h.steps} symbols per lane exceeds {tl.MAX_LANE_SYMBOLS}")
        TL = h.n_tiles * L
        if ipos + 2 * TL > i_size:
            raise CodecError(f"{where}lane index runs past the index section")
        lw = np.frombuffer(idx[ipos : ipos + 2 * TL], "<u2").reshape(h.n_tiles, L).astype(np.int64)
        ipos += 2 * TL
        fmt.check_lane_words(lw, h.tile_sizes(), L, f"tensor {k} ")
        members.append(Member(h, lw, wbase, 0))
        wbase += int(lw.sum())
    if pos != i0:
        raise CodecError(f"directory is {d_size} bytes but its entries end at {pos - d0}")
    if ipos != i_size:
        raise CodecError(f"lane index is {i_size} bytes, entries need {ipos}")
    if wbase != n_words:
        raise CodecError(f"lane word counts sum to {wbase} != word region {n_words}")
    if roff != p_size:
        raise CodecError(f"payload is {p_size} bytes, tensors need {roff}")
    return ParsedGroup(pb, freq if freq is not None else np.zeros(256, np.int64), tuple(members), n_words, mv[p0:])


# ---------------------------------------------------------------------------------------------------
# host decoders


def decode_parsed_numpy(pg: ParsedGroup, which=None) -> list[np.ndarray]:
    """Host decoder (vectorised numpy over all lanes of the selected tensors of a parsed group)."""
    sel = pg.select(which)
    coded = [k for k in sel if pg.members[k].header.coding == fmt.CODING_RANS]
    out = {}
    if coded:
        lay = [pg.members[k].lanes() for k in coded]
        base, nw, lens = (np.concatenate([v[i] for v in lay]) for i in range(3))
        sym_SxN, ok = rans.decode_lanes_numpy(pg.words(), base, nw, lens, pg.freq, pg.prob_bits)
        o = 0
        for k in coded:
            h = pg.members[k].header
            T, L = h.n_tiles, h.lanes
            if not ok[o : o + T * L].all():
                raise CodecError(f"tensor {k}: rANS stream inconsistent (final state or word count)")
            tiles = tl.deinterleave(sym_SxN[:, o : o + T * L], T, L, h.steps, h.tile_max)
            out[k] = fmt.finish_tiles(h, tiles, f"tensor {k}: ")
            o += T * L
    for k in sel:
        if k not in out:
            out[k] = fmt.check_raw(pg.members[k].header, pg.raw_bytes(k).copy(), f"tensor {k}: ")
    return [out[k] for k in sel]


def decode_group_numpy(blob, which=None) -> list[np.ndarray]:
    """Host decoder (vectorised numpy over all lanes of the selected tensors)."""
    return decode_parsed_numpy(parse_group(blob), which)


def decode_group_reference(blob, which=None) -> list[np.ndarray]:
    """Plain scalar reference decoder (one lane at a time, Python ints, linear symbol search)."""
    pg = parse_group(blob)
    words = pg.words()
    res = []
    for k in pg.select(which):
        m = pg.members[k]
        h = m.header
        if h.coding == fmt.CODING_RAW:
            res.append(fmt.check_raw(h, pg.raw_bytes(k).copy(), f"tensor {k}: "))
            continue
        base, nw, lens = m.lanes()
        tiles = np.zeros((h.n_tiles, h.tile_max), np.uint8)
        for t in range(h.n_tiles):
            for lane in range(h.lanes):
                i = t * h.lanes + lane
                try:
                    syms = rans.decode_lane_scalar(words, int(base[i]), int(nw[i]), int(lens[i]), pg.freq, pg.prob_bits)
                except ValueError as e:
                    raise CodecError(f"tensor {k} tile {t} lane {lane}: {e}") from None
                tiles[t, lane : lane + h.lanes * len(syms) : h.lanes] = syms
        res.append(fmt.finish_tiles(h, tiles, f"tensor {k}: "))
    return res


def damaged_members(blob) -> list[int] | None:
    """After a CRC failure: which tensors are damaged? Parses without CRCs and decodes every tensor
    (numpy), returning the indices that fail; None when the structure itself is unreadable."""
    try:
        pg = parse_group(blob, check_crc=False)
    except CodecError:
        return None
    bad = []
    for k in range(len(pg.members)):
        try:
            decode_parsed_numpy(pg, [k])
        except CodecError:
            bad.append(k)
    return bad
