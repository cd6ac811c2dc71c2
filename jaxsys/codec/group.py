"""Group blob (layer format version 2): many int8/uint8 tensors coded with ONE shared rANS table.

A version-1 layer blob (format.py) carries its own 80-byte header and frequency table; on a small
model (64x64 matrices) those, plus the per-lane state and word count of each layer, cost more than
entropy coding gains. A group blob codes all int8 tensors of a model (or any list of tensors) with
one frequency table, built from their pooled symbols, and one header; per tensor it stores only a
few varint bytes of geometry, its raw CRC32 and its lanes (flushed state + word count):

    [header (40 B) | shared table | directory | lane index | payload]

Header (little-endian):
     0  4  magic b"JXRG"
     4  2  version (2)
     6  2  header size (40)
     8  2  tensor count n (>= 1)
    10  1  prob_bits (12..16)
    11  1  reserved (0)
    12  4  table size         (table at offset 40, same coding as version 1)
    16  4  directory size
    20  4  index size
    24  4  payload size       (the blob ends exactly at the payload end)
    28  4  number of u16 words in the payload's word region
    32  4  CRC32 of the payload
    36  4  CRC32 of header bytes 0..35 + table + directory + index
Table: one byte k. k = 255: the version-1 table coding follows (presence bitmap, fixed width; wins
for sparse histograms). k = 0..15: for the 256 symbols in int8 order (byte 0x80 .. 0x7f) the
zigzag-mapped difference f_s - f_prev (f_prev starts at 0) Rice-coded with parameter k (unary
quotient as q one-bits and a zero, then k remainder bits), LSB-first, zero-padded to a byte.
Frequencies of smooth histograms differ little between neighbouring values, so this costs ~3 bits
per symbol instead of version 1's fixed width (~90 vs ~225 bytes for a trained GPT's int8 weights).
Directory, per tensor: unsigned LEB128 varints flags, rows, cols, tile_rows, tile_cols, lanes, then
the CRC32 of the tensor's raw bytes (u32). flags: bit 0 dtype int8 (else uint8), bit 1 1-D,
bit 2 predictor delta, bit 3 stored raw (bits 4..7 zero).
Index: for each rANS-coded tensor in directory order, its T x L lane word counts (u16, tile-major).
Payload: first the word region (all rANS tensors' lane streams, directory order, tile-major, lane
order, u16), then the raw tensors' bytes (directory order).

Tiles, lanes, predictors and lane streams are exactly those of version 1, so every decoder reuses
the version-1 kernels: a group (or any subset of its tensors) is ONE set of independent lanes.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from jaxsys.codec import format as fmt
from jaxsys.codec import rans
from jaxsys.codec.format import CodecError
from jaxsys.errors import ConfigError

MAGIC = b"JXRG"
VERSION = 2
_HDR = struct.Struct("<4sHHHBBIIIIIII")
HEADER_SIZE = _HDR.size  # 40
MAX_TENSORS = 65535
F_INT8, F_1D, F_DELTA, F_RAW = 1, 2, 4, 8


@dataclasses.dataclass(frozen=True)
class Member:
    header: fmt.LayerHeader  # geometry in version-1 terms (offset fields unused, 0)
    lane_words: np.ndarray  # (T, L) words per lane (empty for raw)
    word_base: int  # first word of this tensor in the word region
    raw_off: int  # byte offset of a raw tensor inside the payload

    @property
    def n_lanes(self) -> int:
        return 0 if self.header.coding == fmt.CODING_RAW else self.header.n_tiles * self.header.lanes


@dataclasses.dataclass(frozen=True)
class ParsedGroup:
    prob_bits: int
    freq: np.ndarray  # (256,) shared frequencies
    members: tuple  # Member per tensor
    n_words: int  # u16 words in the word region
    payload: memoryview


# ---------------------------------------------------------------------------------------------------
# varints


def _uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_uleb(mv, pos: int, end: int, what: str) -> tuple[int, int]:
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
# shared table: Rice-coded frequency differences in int8 order

_ORDER = (np.arange(256) + 128) % 256  # bytes 0x80..0xff, 0x00..0x7f (int8 -128..127)


def pack_table(freq: np.ndarray) -> bytes:
    """The shorter of the Rice coding and (flag 255) the version-1 coding of a table."""
    rice = rice_table(freq)
    v1 = bytes([255]) + fmt._pack_table(np.asarray(freq, np.int64))
    return rice if len(rice) <= len(v1) else v1


def rice_table(freq: np.ndarray) -> bytes:
    f = np.asarray(freq, np.int64)[_ORDER]
    d = np.diff(np.concatenate([[0], f]))
    z = np.where(d >= 0, 2 * d, -2 * d - 1)
    k = min(range(16), key=lambda k: int(((z >> k) + 1 + k).sum()))
    bits = []
    for v in z.tolist():
        bits += [1] * (v >> k) + [0] + [(v >> i) & 1 for i in range(k)]
    return bytes([k]) + np.packbits(np.array(bits, np.uint8), bitorder="little").tobytes()


def parse_table(tb, prob_bits: int) -> np.ndarray:
    tb = bytes(tb)
    if len(tb) < 2:
        raise CodecError(f"shared table of {len(tb)} bytes is too short")
    k = tb[0]
    if k == 255:
        return fmt._parse_table(memoryview(tb[1:]), prob_bits)
    if k > 15:
        raise CodecError(f"shared table Rice parameter {k} > 15")
    bits = np.unpackbits(np.frombuffer(tb[1:], np.uint8), bitorder="little")
    nb = len(bits)
    ones = np.flatnonzero(bits == 0)  # positions of unary terminators
    pos, prev, out = 0, 0, np.zeros(256, np.int64)
    M = 1 << prob_bits
    for i in range(256):
        j = np.searchsorted(ones, pos)
        if j >= len(ones):
            raise CodecError(f"shared table truncated at symbol {i}")
        q = int(ones[j]) - pos
        pos = int(ones[j]) + 1
        if pos + k > nb:
            raise CodecError(f"shared table truncated at symbol {i}")
        r = int((bits[pos : pos + k].astype(np.int64) << np.arange(k)).sum()) if k else 0
        pos += k
        z = (q << k) | r
        prev += (z >> 1) if z % 2 == 0 else -((z + 1) >> 1)
        if not 0 <= prev <= M:
            raise CodecError(f"shared table frequency {prev} of symbol {i} outside 0..{M}")
        out[_ORDER[i]] = prev
    if (pos + 7) // 8 != nb // 8 or bits[pos:].any():
        raise CodecError("shared table has trailing bits")
    if int(out.sum()) != M:
        raise CodecError(f"shared table frequencies sum to {int(out.sum())}, expected 2^{prob_bits}")
    return out


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
    valid: np.ndarray
    pred: int
    counts: np.ndarray


def _prep(x, tile_shape, lanes, predictor, min_lane_symbols) -> _Prep:
    x = fmt._validate_input(x)
    tr, tc = (int(v) for v in tile_shape)
    u2, tr, tc = fmt.as_rows(x, tr, tc)
    rows, cols = u2.shape
    tr, tc = min(tr, rows), min(tc, cols)  # canonical: a tile never exceeds the tensor
    P = tr * tc
    L = fmt.lane_count(P, lanes, min_lane_symbols)
    sizes = fmt.tile_sizes(rows, cols, tr, tc)
    tiles = fmt.to_tiles(u2, tr, tc)
    valid = np.arange(P)[None, :] < sizes[:, None]
    cand = {}
    if predictor in ("auto", "none"):
        cand[fmt.PRED_NONE] = tiles
    if predictor in ("auto", "delta"):
        cand[fmt.PRED_DELTA] = fmt.delta_forward(tiles)
    best = None
    for pred, t in cand.items():
        counts = np.bincount(t[valid], minlength=256)
        h = fmt.entropy_bits(counts)
        if best is None or h < best[0] - 1e-9:
            best = (h, pred, t, counts)
    _, pred, sym, counts = best
    return _Prep(x, u2, tr, tc, L, sizes, sym, valid, pred, counts)


def coded_bits(counts: np.ndarray, freq: np.ndarray, prob_bits: int) -> float:
    """Ideal rANS cost (bits) of symbols with these counts under a normalised table."""
    m = counts > 0
    return float((counts[m] * np.log2((1 << prob_bits) / freq[m])).sum())


def choose_table(counts: np.ndarray, prob_bits=None) -> tuple[int, np.ndarray]:
    """(prob_bits, freq): the given precision, or (None) the one of 12..16 that minimises
    table bytes + ideal coded bytes of `counts`."""
    if prob_bits is not None:
        pb = int(prob_bits)
        if not rans.MIN_PROB_BITS <= pb <= rans.MAX_PROB_BITS:
            raise ConfigError(f"prob_bits must be in 12..16, got {prob_bits}")
        return pb, rans.normalize_freqs(counts, pb)
    best = None
    for pb in range(rans.MIN_PROB_BITS, rans.MAX_PROB_BITS + 1):
        f = rans.normalize_freqs(counts, pb)
        cost = coded_bits(counts, f, pb) / 8 + len(pack_table(f))
        if best is None or cost < best[0] - 1e-9:
            best = (cost, pb, f)
    return best[1], best[2]


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
    if predictor not in ("auto", "none", "delta"):
        raise ConfigError(f"predictor must be auto, none or delta, got {predictor!r}")
    if not (1 <= int(lanes) <= fmt.MAX_LANES):
        raise ConfigError(f"lanes must be in 1..{fmt.MAX_LANES}, got {lanes}")
    if min(int(v) for v in tile_shape) < 1:
        raise ConfigError(f"tile_shape must be positive, got {tile_shape}")
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
    table = pack_table(freq) if freq is not None else b""
    by_idx = dict(zip(coded, streams))
    directory, index, words, raws = bytearray(), bytearray(), [], []
    for i, p in enumerate(preps):
        rows, cols = p.u2.shape
        raw = i not in by_idx
        flags = (
            (F_INT8 if p.x.dtype == np.int8 else 0)
            | (F_1D if p.x.ndim == 1 else 0)
            | (F_DELTA if (p.pred == fmt.PRED_DELTA and not raw) else 0)
            | (F_RAW if raw else 0)
        )
        for v in (flags, rows, cols, p.tr, p.tc, p.lanes):
            directory += _uleb(int(v))
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
    fields = [
        MAGIC,
        VERSION,
        HEADER_SIZE,
        len(preps),
        pb,
        0,
        len(table),
        len(directory),
        len(index),
        len(payload),
        len(wall),
        zlib.crc32(payload),
        0,
    ]
    hdr = bytearray(_HDR.pack(*fields))
    meta = bytes(table) + bytes(directory) + bytes(index)
    struct.pack_into("<I", hdr, HEADER_SIZE - 4, zlib.crc32(meta, zlib.crc32(bytes(hdr[:-4]))))
    return bytes(hdr) + meta + payload


def _encode_members(preps, freq, pb):
    """All lanes of all tensors in one vectorised encoder call -> [(words, nwords (T, L))]."""
    fill = int(np.argmax(freq))
    S = max(-(-p.sym.shape[1] // p.lanes) for p in preps)
    cols, lens, shapes = [], [], []
    for p in preps:
        T, P = p.sym.shape
        L = p.lanes
        Sp = -(-P // L)
        padded = np.full((T, S * L), fill, np.uint8)
        padded[:, :P] = np.where(p.valid, p.sym, fill)
        cols.append(padded.reshape(T, S, L).transpose(1, 0, 2).reshape(S, T * L))
        lens.append(np.maximum(0, -(-(p.sizes[:, None] - np.arange(L)[None, :]) // L)).reshape(-1))
        shapes.append((T, L))
        assert Sp <= S
    sym_SxN = np.ascontiguousarray(np.concatenate(cols, axis=1))
    words, nwords = rans.encode_lanes(sym_SxN, np.concatenate(lens), freq, pb)
    out, wo, lo = [], 0, 0
    for T, L in shapes:
        nw = nwords[lo : lo + T * L]
        n = int(nw.sum())
        out.append((words[wo : wo + n], nw.reshape(T, L)))
        wo += n
        lo += T * L
    return out


# ---------------------------------------------------------------------------------------------------
# parsing


def is_group_blob(blob) -> bool:
    return bytes(memoryview(blob)[:4]) == MAGIC


def parse_group(blob, check_crc: bool = True) -> ParsedGroup:
    """Parse and fully validate a group blob (header, CRCs, table, directory, lane index)."""
    mv = memoryview(blob).cast("B")
    if len(mv) < HEADER_SIZE:
        raise CodecError(f"group blob of {len(mv)} bytes is shorter than the {HEADER_SIZE}-byte header")
    (magic, version, hsize, n, pb, resv, t_size, d_size, i_size, p_size, n_words, pcrc, mcrc) = _HDR.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r} (expected {MAGIC!r}): not a jaxsys group blob")
    if version != VERSION:
        raise CodecError(f"unsupported group format version {version} (this build reads {VERSION})")
    if hsize != HEADER_SIZE or resv != 0:
        raise CodecError(f"header size {hsize} / reserved {resv} invalid")
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
        if meta != mcrc:
            raise CodecError(f"header/table/directory/index CRC mismatch ({meta:#010x} != {mcrc:#010x})")
        if zlib.crc32(mv[p0:]) != pcrc:
            raise CodecError("payload CRC mismatch")
    freq = parse_table(mv[t0:d0], pb) if t_size else None
    members, pos, ipos, wbase, roff = [], d0, 0, 0, 2 * n_words
    idx = mv[i0:p0]
    for k in range(n):
        vals = []
        for what in ("flags", "rows", "cols", "tile_rows", "tile_cols", "lanes"):
            v, pos = _read_uleb(mv, pos, i0, f"tensor {k} {what}")
            vals.append(v)
        if pos + 4 > i0:
            raise CodecError(f"directory truncated at tensor {k} raw CRC")
        (rcrc,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        flags, rows, cols, tr, tc, L = vals
        if flags & ~0xF:
            raise CodecError(f"tensor {k}: unknown flags {flags:#x}")
        raw = bool(flags & F_RAW)
        one_d = bool(flags & F_1D)
        if raw and flags & F_DELTA:
            raise CodecError(f"tensor {k}: raw tensor with a predictor")
        if rows < 1 or cols < 1 or rows * cols > fmt.MAX_ELEMENTS:
            raise CodecError(f"tensor {k}: shape {rows}x{cols} is empty or too large")
        if one_d and (rows != 1 or tr != 1):
            raise CodecError(f"tensor {k}: 1-D tensor must have rows == tile_rows == 1")
        if tr < 1 or tc < 1:
            raise CodecError(f"tensor {k}: tile shape {tr}x{tc} is not positive")
        if not (1 <= L <= fmt.MAX_LANES):
            raise CodecError(f"tensor {k}: lanes {L} outside 1..{fmt.MAX_LANES}")
        T = (-(-rows // tr)) * (-(-cols // tc))
        shape = (cols,) if one_d else (rows, cols)
        h = fmt.LayerHeader(
            np.dtype(np.int8 if flags & F_INT8 else np.uint8),
            shape,
            rows,
            cols,
            tr,
            tc,
            T,
            L,
            pb,
            fmt.CODING_RAW if raw else fmt.CODING_RANS,
            fmt.PRED_DELTA if flags & F_DELTA else fmt.PRED_NONE,
            0,
            0,
            0,
            0,
            0,
            0,
            rcrc,
            0,
            0,
            0,
            0,
        )
        if raw:
            if roff + rows * cols > p_size:
                raise CodecError(f"tensor {k}: raw bytes run past the payload")
            members.append(Member(h, np.zeros((0, L), np.int64), 0, roff))
            roff += rows * cols
            continue
        if freq is None:
            raise CodecError(f"tensor {k} is rANS-coded but the group has no table")
        if h.steps > fmt.MAX_LANE_SYMBOLS:
            raise CodecError(f"tensor {k}: {h.steps} symbols per lane exceeds {fmt.MAX_LANE_SYMBOLS}")
        if ipos + 2 * T * L > i_size:
            raise CodecError(f"tensor {k}: lane index runs past the index section")
        lw = np.frombuffer(idx[ipos : ipos + 2 * T * L], "<u2").reshape(T, L).astype(np.int64)
        ipos += 2 * T * L
        sizes = fmt.tile_sizes(rows, cols, tr, tc)
        lane_sym = np.maximum(0, -(-(sizes[:, None] - np.arange(L)[None, :]) // L))
        bad = np.argwhere((lw < 2) | (lw > lane_sym + 2))
        if len(bad):
            t, lane = (int(v) for v in bad[0])
            raise CodecError(
                f"tensor {k} tile {t} lane {lane}: {lw[t, lane]} words is impossible for {lane_sym[t, lane]} symbols"
            )
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
    if freq is None and t_size == 0 and any(m.header.coding == fmt.CODING_RANS for m in members):
        raise CodecError("rANS tensors without a table")
    return ParsedGroup(pb, freq if freq is not None else np.zeros(256, np.int64), tuple(members), n_words, mv[p0:])


def _members(pg: ParsedGroup, which) -> list[int]:
    n = len(pg.members)
    which = range(n) if which is None else which
    out = []
    for k in which:
        if not 0 <= int(k) < n:
            raise CodecError(f"group has {n} tensors, no tensor {k}")
        out.append(int(k))
    return out


def member_lanes(m: Member):
    """(base word index in the word region, words, symbols) per lane of a rANS member."""
    h = m.header
    sizes = fmt.tile_sizes(h.rows, h.cols, h.tile_rows, h.tile_cols)
    nw = m.lane_words.reshape(-1)
    base = m.word_base + np.concatenate([[0], np.cumsum(nw)[:-1]]).astype(np.int64)
    lens = np.maximum(0, -(-(sizes[:, None] - np.arange(h.lanes)[None, :]) // h.lanes)).reshape(-1)
    return base, nw, lens


def _finish(m: Member, tiles: np.ndarray, k: int) -> np.ndarray:
    h = m.header
    if h.predictor == fmt.PRED_DELTA:
        tiles = fmt.delta_inverse(tiles)
    u2 = fmt.from_tiles(tiles, h.rows, h.cols, h.tile_rows, h.tile_cols)
    if zlib.crc32(u2.tobytes()) != h.raw_crc:
        raise CodecError(f"tensor {k}: decoded data fails the raw CRC32 (corrupted stream)")
    return u2.view(h.dtype).reshape(h.shape)


def _raw(pg: ParsedGroup, m: Member, k: int) -> np.ndarray:
    h = m.header
    u2 = np.frombuffer(pg.payload[m.raw_off : m.raw_off + h.rows * h.cols], np.uint8).copy()
    if zlib.crc32(u2.tobytes()) != h.raw_crc:
        raise CodecError(f"tensor {k}: raw bytes fail the raw CRC32")
    return u2.view(h.dtype).reshape(h.shape)


def decode_group_numpy(blob, which=None) -> list[np.ndarray]:
    """Host decoder (vectorised numpy over all lanes of the selected tensors)."""
    return _decode_parsed(parse_group(blob), which)


def _decode_parsed(pg: ParsedGroup, which) -> list[np.ndarray]:
    sel = _members(pg, which)
    words = np.frombuffer(pg.payload[: 2 * pg.n_words], "<u2")
    coded = [k for k in sel if pg.members[k].header.coding == fmt.CODING_RANS]
    out = {}
    if coded:
        lay = [member_lanes(pg.members[k]) for k in coded]
        base, nw, lens = (np.concatenate([v[i] for v in lay]) for i in range(3))
        sym_SxN, ok = rans.decode_lanes_numpy(words, base, nw, lens, pg.freq, pg.prob_bits)
        o = 0
        for k in coded:
            m = pg.members[k]
            h = m.header
            T, L, S = h.n_tiles, h.lanes, h.steps
            if not ok[o : o + T * L].all():
                raise CodecError(f"tensor {k}: rANS stream inconsistent (final state or word count)")
            t = sym_SxN[:S, o : o + T * L].reshape(S, T, L).transpose(1, 0, 2).reshape(T, S * L)
            out[k] = _finish(m, np.ascontiguousarray(t[:, : h.tile_max]), k)
            o += T * L
    for k in sel:
        if k not in out:
            out[k] = _raw(pg, pg.members[k], k)
    return [out[k] for k in sel]


def decode_group_reference(blob, which=None) -> list[np.ndarray]:
    """Plain scalar reference decoder (one lane at a time, Python ints, linear symbol search)."""
    pg = parse_group(blob)
    words = np.frombuffer(pg.payload[: 2 * pg.n_words], "<u2")
    res = []
    for k in _members(pg, which):
        m = pg.members[k]
        h = m.header
        if h.coding == fmt.CODING_RAW:
            res.append(_raw(pg, m, k))
            continue
        base, nw, lens = member_lanes(m)
        tiles = np.zeros((h.n_tiles, h.tile_max), np.uint8)
        for t in range(h.n_tiles):
            for lane in range(h.lanes):
                i = t * h.lanes + lane
                try:
                    syms = rans.decode_lane_scalar(words, int(base[i]), int(nw[i]), int(lens[i]), pg.freq, pg.prob_bits)
                except ValueError as e:
                    raise CodecError(f"tensor {k} tile {t} lane {lane}: {e}") from None
                tiles[t, lane : lane + h.lanes * len(syms) : h.lanes] = syms
        res.append(_finish(m, tiles, k))
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
            _decode_parsed(pg, [k])
        except CodecError:
            bad.append(k)
    return bad


def group_symbols(blob, arrays) -> np.ndarray:
    """Pooled histogram (256,) of the symbols the blob codes with its shared table (each rANS
    tensor's chosen-predictor symbols); its order-0 entropy is the bound a shared table aims at."""
    pg = parse_group(blob, check_crc=False)
    counts = np.zeros(256, np.int64)
    for m, x in zip(pg.members, arrays):
        h = m.header
        if h.coding == fmt.CODING_RAW:
            continue
        u2 = np.ascontiguousarray(x).view(np.uint8).reshape(h.rows, h.cols)
        t = fmt.to_tiles(u2, h.tile_rows, h.tile_cols)
        if h.predictor == fmt.PRED_DELTA:
            t = fmt.delta_forward(t)
        valid = np.arange(t.shape[1])[None, :] < fmt.tile_sizes(h.rows, h.cols, h.tile_rows, h.tile_cols)[:, None]
        counts += np.bincount(t[valid], minlength=256)
    return counts


def group_info(blob) -> dict:
    pg = parse_group(blob)
    raw = sum(m.header.rows * m.header.cols for m in pg.members)
    return {
        "tensors": len(pg.members),
        "prob_bits": pg.prob_bits,
        "raw_bytes": raw,
        "blob_bytes": len(blob),
        "ratio": raw / len(blob),
        "lanes": int(sum(m.n_lanes for m in pg.members)),
        "raw_tensors": sum(m.header.coding == fmt.CODING_RAW for m in pg.members),
    }
