import numpy as np
import pytest

from jaxsys.codec import rans


def test_hand_computed_single_step():
    # f0 = f1 = 2048 (M = 4096): encoding symbol 1 from x = 2^16 gives
    # x = (65536 // 2048) * 4096 + 65536 % 2048 + 2048 = 133120 = 0x00020800, no renormalisation
    freq = np.zeros(256, np.int64)
    freq[0] = freq[1] = 2048
    words, nw = rans.encode_lanes(np.array([[1]], np.uint8), np.array([1]), freq, 12)
    assert nw.tolist() == [2]
    assert words.tolist() == [0x0800, 0x0002]
    assert rans.decode_lane_scalar(words, 0, 2, 1, freq, 12) == [1]


def test_hand_computed_renormalisation():
    # a rare symbol (f=1, M=4096) from x = 2^16: x >= 1 * 2^20? no -> x = 65536 * 4096 + c
    # (overflow-free because 65536 < 2^20); a second rare symbol then must emit one word.
    freq = np.zeros(256, np.int64)
    freq[0], freq[1] = 4095, 1
    words, nw = rans.encode_lanes(np.array([[1], [1]], np.uint8), np.array([2]), freq, 12)
    # step k=1: x = 65536*4096 + 4095 = 268439551 (0x10000FFF); step k=0: x >= 2^20 -> emit 0x0FFF,
    # x = 0x1000 = 4096 -> x = 4096*4096 + 4095 = 16781311 = 0x01000FFF
    assert words.tolist() == [0x0FFF, 0x0100, 0x0FFF]
    assert rans.decode_lane_scalar(words, 0, 3, 2, freq, 12) == [1, 1]


@pytest.mark.parametrize("pb", [12, 14, 16])
def test_normalize_freqs(pb):
    rng = np.random.default_rng(pb)
    counts = np.zeros(256, np.int64)
    counts[rng.choice(256, 40, replace=False)] = rng.integers(1, 10_000, 40)
    counts[3] = 1  # a very rare symbol still gets f >= 1
    f = rans.normalize_freqs(counts, pb)
    assert f.sum() == 1 << pb
    assert np.all(f[counts > 0] >= 1) and np.all(f[counts == 0] == 0)
    n = counts.sum()
    coded = float((counts[counts > 0] * np.log2((1 << pb) / f[counts > 0])).sum())
    ent = float((counts[counts > 0] * np.log2(n / counts[counts > 0])).sum())
    assert coded <= ent * 1.01 + 64


def test_single_symbol_gets_all_mass():
    counts = np.zeros(256, np.int64)
    counts[200] = 5
    f = rans.normalize_freqs(counts, 16)
    assert f[200] == 1 << 16 and f.sum() == 1 << 16


@pytest.mark.parametrize("pb", [12, 16])
def test_lanes_roundtrip_vectorised_vs_scalar(pb):
    rng = np.random.default_rng(0)
    N, S = 7, 50
    lens = rng.integers(0, S + 1, N)
    lens[0] = S
    sym = rng.choice(np.arange(0, 256, 5), size=(S, N), p=None).astype(np.uint8)
    counts = np.bincount(sym[np.arange(S)[:, None] < lens[None, :]], minlength=256)
    freq = rans.normalize_freqs(counts, pb)
    pad = np.where(np.arange(S)[:, None] < lens[None, :], sym, np.uint8(np.argmax(freq)))
    words, nw = rans.encode_lanes(pad, lens, freq, pb)
    base = np.concatenate([[0], np.cumsum(nw)[:-1]])
    out, ok = rans.decode_lanes_numpy(words, base, nw, lens, freq, pb)
    assert ok.all()
    for n in range(N):
        ref = rans.decode_lane_scalar(words, int(base[n]), int(nw[n]), int(lens[n]), freq, pb)
        assert ref == sym[: lens[n], n].tolist()
        assert out[: lens[n], n].tolist() == ref


def test_scalar_decoder_rejects_bad_lane():
    freq = np.zeros(256, np.int64)
    freq[0] = freq[1] = 2048
    with pytest.raises(ValueError):
        rans.decode_lane_scalar(np.array([0x0801, 0x0002]), 0, 2, 1, freq, 12)
