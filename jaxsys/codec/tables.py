"""Frequency tables: the two codings of a normalised 256-symbol table, and the choice of precision.

Bitmap coding (a layer blob's table): a 32-byte presence bitmap, one byte bit width w, then (f - 1) of
each present symbol in w bits (LSB first, ascending symbol order, zero-padded to a byte).

Rice coding (a group blob's shared table, flag byte k = 0..15): for the 256 symbols in int8 order
(byte 0x80 .. 0x7f) the zigzag-mapped difference f_s - f_prev (f_prev starts at 0) Rice-coded with
parameter k (unary quotient as q one-bits and a zero, then k remainder bits), LSB-first, zero-padded to
a byte. Smooth histograms cost ~3 bits per symbol instead of the bitmap's fixed width. Flag k = 255
means the bitmap coding follows (it wins for sparse histograms); `pack_shared_table` writes the shorter.
"""

from __future__ import annotations

import numpy as np

from jaxsys.codec import rans
from jaxsys.codec.errors import CodecError
from jaxsys.errors import ConfigError

INT8_ORDER = (np.arange(256) + 128) % 256  # bytes 0x80..0xff, 0x00..0x7f (int8 -128..127)
BITMAP_FLAG = 255


def pack_bitmap_table(freq: np.ndarray) -> bytes:
    freq = np.asarray(freq, np.int64)
    present = freq > 0
    bitmap = np.packbits(present.astype(np.uint8), bitorder="little").tobytes()
    v = (freq[present] - 1).astype(np.int64)
    w = int(v.max()).bit_length()
    bits = ((v[:, None] >> np.arange(w)[None, :]) & 1).astype(np.uint8).reshape(-1)
    return bitmap + bytes([w]) + np.packbits(bits, bitorder="little").tobytes()


def parse_bitmap_table(tb, prob_bits: int) -> np.ndarray:
    tb = memoryview(bytes(tb))
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


def rice_table(freq: np.ndarray) -> bytes:
    f = np.asarray(freq, np.int64)[INT8_ORDER]
    d = np.diff(np.concatenate([[0], f]))
    z = np.where(d >= 0, 2 * d, -2 * d - 1)
    k = min(range(16), key=lambda k: int(((z >> k) + 1 + k).sum()))
    bits = []
    for v in z.tolist():
        bits += [1] * (v >> k) + [0] + [(v >> i) & 1 for i in range(k)]
    return bytes([k]) + np.packbits(np.array(bits, np.uint8), bitorder="little").tobytes()


def pack_shared_table(freq: np.ndarray) -> bytes:
    """The shorter of the Rice coding and (flag 255) the bitmap coding of a table."""
    rice = rice_table(freq)
    bitmap = bytes([BITMAP_FLAG]) + pack_bitmap_table(freq)
    return rice if len(rice) <= len(bitmap) else bitmap


def parse_shared_table(tb, prob_bits: int) -> np.ndarray:
    tb = bytes(tb)
    if len(tb) < 2:
        raise CodecError(f"shared table of {len(tb)} bytes is too short")
    k = tb[0]
    if k == BITMAP_FLAG:
        return parse_bitmap_table(tb[1:], prob_bits)
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
        out[INT8_ORDER[i]] = prev
    if (pos + 7) // 8 != nb // 8 or bits[pos:].any():
        raise CodecError("shared table has trailing bits")
    if int(out.sum()) != M:
        raise CodecError(f"shared table frequencies sum to {int(out.sum())}, expected 2^{prob_bits}")
    return out


def coded_bits(counts: np.ndarray, freq: np.ndarray, prob_bits: int) -> float:
    """Ideal rANS cost (bits) of symbols with these counts under a normalised table."""
    m = counts > 0
    return float((counts[m] * np.log2((1 << prob_bits) / freq[m])).sum())


def check_prob_bits(prob_bits) -> int:
    pb = int(prob_bits)
    if not rans.MIN_PROB_BITS <= pb <= rans.MAX_PROB_BITS:
        raise ConfigError(f"prob_bits must be in {rans.MIN_PROB_BITS}..{rans.MAX_PROB_BITS}, got {prob_bits}")
    return pb


def choose_table(counts: np.ndarray, prob_bits=None) -> tuple[int, np.ndarray]:
    """(prob_bits, freq): the given precision, or (None) the one of 12..16 that minimises shared-table
    bytes + ideal coded bytes of `counts`."""
    if prob_bits is not None:
        pb = check_prob_bits(prob_bits)
        return pb, rans.normalize_freqs(counts, pb)
    best = None
    for pb in range(rans.MIN_PROB_BITS, rans.MAX_PROB_BITS + 1):
        f = rans.normalize_freqs(counts, pb)
        cost = coded_bits(counts, f, pb) / 8 + len(pack_shared_table(f))
        if best is None or cost < best[0] - 1e-9:
            best = (cost, pb, f)
    return best[1], best[2]
