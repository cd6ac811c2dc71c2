"""rANS core: frequency normalisation, a numpy encoder vectorised over many lanes, and two host
decoders (vectorised numpy; plain scalar reference).

Coder (32-bit state, 16-bit word renormalisation; Duda's rANS as in ryg_rans' "rans_word" variant):

    M = 2^prob_bits,  state x in [2^16, 2^32),  symbol s with frequency f_s and start c_s
    encode s:  if x >= f_s * 2^(32 - prob_bits): emit x mod 2^16, x >>= 16       (at most once)
               x = (x // f_s) * M + (x mod f_s) + c_s
    decode:    slot = x mod M,  s = sym[slot],  x = f_s * (x >> prob_bits) + slot - c_s
               if x < 2^16: x = (x << 16) | next_word                          (at most once)

Why 16-bit words: with prob_bits <= 16 the renormalisation is *at most one* read per symbol, so the
decoder step is branch-free (`where(x < 2^16, ...)`) and every lane advances in lock-step under vmap;
the byte-wise coder needs a data-dependent loop of up to 2 reads per symbol.

Each lane's stream (decoder order) is: [x_final & 0xffff, x_final >> 16, w_0, w_1, ...] where w_k is the
word the encoder emitted while encoding symbol k. The encoder starts from x = 2^16, so a correct decode
ends with x == 2^16 and has consumed exactly the lane's word count (the decoder's integrity check).
"""

from __future__ import annotations

import numpy as np

RANS_L = 1 << 16  # lower bound of the state interval
WORD_BITS = 16
MIN_PROB_BITS, MAX_PROB_BITS = 12, 16


def normalize_freqs(counts: np.ndarray, prob_bits: int) -> np.ndarray:
    """Quantise symbol counts to integer frequencies summing to 2^prob_bits.

    Every present symbol gets f >= 1, absent symbols 0. Start from floor(c * M / n) (raised to 1),
    then move the remaining units greedily by the largest gain / smallest loss of c * log2(f), which
    minimises the coded size sum_s c_s * log2(M / f_s) over the increments (the cost is convex in f).
    At most 256 greedy steps in either direction.
    """
    counts = np.asarray(counts, dtype=np.int64)
    M = 1 << prob_bits
    n = int(counts.sum())
    present = counts > 0
    if n <= 0:
        raise ValueError("no symbols to model")
    f = np.where(present, np.maximum(1, (counts * M) // n), 0).astype(np.int64)
    diff = M - int(f.sum())
    c = counts.astype(np.float64)
    while diff > 0:
        fl = f.astype(np.float64)
        gain = np.where(present, c * np.log2((fl + 1) / np.maximum(fl, 1)), -np.inf)
        i = int(np.argmax(gain))
        f[i] += 1
        diff -= 1
    while diff < 0:
        fl = f.astype(np.float64)
        can = present & (f > 1)  # absent symbols never reach log2 (no divide-by-zero warning)
        cost = np.where(can, c * np.log2(np.where(can, fl / np.maximum(fl - 1, 1), 2.0)), np.inf)
        i = int(np.argmin(cost))
        f[i] -= 1
        diff += 1
    return f


def cum_freqs(freq: np.ndarray) -> np.ndarray:
    """Start of each symbol's slot range: c_s = sum_{t < s} f_t."""
    freq = np.asarray(freq, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)


def encode_lanes(sym_SxN: np.ndarray, len_N: np.ndarray, freq: np.ndarray, prob_bits: int):
    """Encode N independent lanes in lock-step (numpy, vectorised across lanes).

    Args:
      sym_SxN: uint8, symbol k of lane n at [k, n]; positions k >= len_N[n] are padding and must hold a
        symbol with f > 0 (they are not coded).
      len_N: symbols per lane.
      freq: (256,) normalised frequencies summing to 2^prob_bits.
    Returns:
      words: uint16 concatenation of all lanes' streams in lane order (decoder order within a lane).
      nwords_N: int64 words per lane (>= 2: the final state).
    """
    S, N = sym_SxN.shape
    f_tab = np.asarray(freq, dtype=np.uint64)
    c_tab = cum_freqs(freq).astype(np.uint64)
    shift = np.uint64(32 - prob_bits)
    pb = np.uint64(prob_bits)
    x = np.full(N, RANS_L, dtype=np.uint64)
    out = np.zeros((N, S + 2), dtype=np.uint16)
    emit = np.zeros((N, S + 2), dtype=bool)
    len_N = np.asarray(len_N, dtype=np.int64)
    sixteen, lo = np.uint64(16), np.uint64(0xFFFF)
    for k in range(S - 1, -1, -1):
        s = sym_SxN[k]
        f = f_tab[s]
        act = k < len_N
        e = act & (x >= (f << shift))
        out[:, k + 2] = x & lo
        emit[:, k + 2] = e
        x = np.where(e, x >> sixteen, x)
        q = x // f
        x = np.where(act, (q << pb) + (x - q * f) + c_tab[s], x)
    out[:, 0] = x & lo
    out[:, 1] = x >> sixteen
    emit[:, :2] = True
    return out[emit], emit.sum(axis=1)


def slot_tables(freq: np.ndarray, prob_bits: int):
    """slot -> symbol, frequency and bias (slot - c_s) for the 2^prob_bits slots."""
    freq = np.asarray(freq, dtype=np.int64)
    sym = np.repeat(np.arange(256, dtype=np.int64), freq)
    cum = cum_freqs(freq)
    slots = np.arange(1 << prob_bits, dtype=np.int64)
    return sym.astype(np.uint8), freq[sym], slots - cum[sym]


def decode_lanes_numpy(
    words: np.ndarray, base_N: np.ndarray, nwords_N: np.ndarray, len_N: np.ndarray, freq: np.ndarray, prob_bits: int
):
    """Vectorised host decoder: all lanes in lock-step, mirroring the JAX kernel.

    Returns (sym_SxN uint8, ok_N bool) where ok means final state 2^16 and all words consumed.
    Reads are clipped into `words`, and the loop runs max(len_N) steps, so any input terminates.
    """
    words = np.asarray(words, dtype=np.uint64)
    W = len(words)
    if W == 0:
        words = np.zeros(1, np.uint64)
        W = 1
    sym_t, f_t, b_t = slot_tables(freq, prob_bits)
    f_t, b_t = f_t.astype(np.uint64), b_t.astype(np.uint64)
    base = np.asarray(base_N, dtype=np.int64)
    len_N = np.asarray(len_N, dtype=np.int64)
    S = int(len_N.max()) if len(len_N) else 0
    x = words[np.clip(base, 0, W - 1)] | (words[np.clip(base + 1, 0, W - 1)] << np.uint64(16))
    ptr = base + 2
    mask, pb = np.uint64((1 << prob_bits) - 1), np.uint64(prob_bits)
    out = np.zeros((S, len(base)), dtype=np.uint8)
    for k in range(S):
        act = k < len_N
        slot = (x & mask).astype(np.int64)
        out[k] = sym_t[slot]
        xn = f_t[slot] * (x >> pb) + b_t[slot]
        need = xn < RANS_L
        w = words[np.clip(ptr, 0, W - 1)]
        xn = np.where(need, (xn << np.uint64(16)) | w, xn)
        x = np.where(act, xn, x)
        ptr = np.where(act, ptr + need, ptr)
    ok = (x == RANS_L) & (ptr - base == np.asarray(nwords_N, dtype=np.int64))
    return out, ok


def decode_lane_scalar(words, start: int, nwords: int, nsym: int, freq, prob_bits: int) -> list[int]:
    """Plain scalar reference decoder of one lane (Python ints, linear symbol search; no tables).

    Raises ValueError if the lane is inconsistent (reads past its words, bad final state).
    """
    freq = [int(v) for v in freq]
    cum = [0] * 257
    for s in range(256):
        cum[s + 1] = cum[s] + freq[s]
    M = 1 << prob_bits
    end = start + nwords
    if nwords < 2:
        raise ValueError("lane shorter than its initial state")
    x = int(words[start]) | (int(words[start + 1]) << 16)
    p = start + 2
    out = []
    for _ in range(nsym):
        slot = x % M
        s = 0
        while not (cum[s] <= slot < cum[s + 1]):
            s += 1
            if s >= 256:
                raise ValueError("slot outside the frequency table")
        out.append(s)
        x = freq[s] * (x >> prob_bits) + slot - cum[s]
        if x < RANS_L:
            if p >= end:
                raise ValueError("lane reads past its words")
            x = (x << 16) | int(words[p])
            p += 1
    if x != RANS_L or p != end:
        raise ValueError("lane final state or word count mismatch")
    return out
