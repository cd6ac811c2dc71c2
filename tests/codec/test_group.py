"""Group blobs (layer format version 2): many tensors, one shared frequency table.

Round trips through the vectorised numpy, scalar reference and JAX decoders (one kernel call for any
subset of tensors); the Rice-coded table against a hand-computed case; the size of a multi-tensor
group against the order-0 entropy bound of its pooled symbols; structural errors; a fuzz test of
1,200 mutated group blobs (each decodes to the original or raises CodecError)."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.codec import decode as D
from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec import rans, tables
from jaxsys.codec import tiles as tl
from jaxsys.codec.bench import group_symbols
from jaxsys.codec.format import CodecError
from jaxsys.errors import ConfigError, ShapeError
from tests.codec.helpers import mutations, reseal_group, source


def _mixed(rng):
    return [
        source("gauss", (40, 48), rng),
        source("heavy", (17, 23), rng),
        source("ramp", (9, 70), rng, np.uint8),
        source("gauss", (100,), rng),
        source("constant", (5, 5), rng),
        source("uniform", (33, 31), rng, np.uint8),
        source("all256", (16, 16), rng, np.uint8),
    ]


@pytest.mark.parametrize(
    "tile,lanes,pb,mls", [((16, 16), 4, 12, 0), ((8, 32), 3, None, 0), ((64, 64), 32, 16, 64), ((32, 16), 1, 14, 0)]
)
def test_roundtrip_all_decoders(tile, lanes, pb, mls):
    rng = np.random.default_rng(0)
    xs = _mixed(rng)
    blob = G.encode_group(xs, tile, lanes, pb, min_lane_symbols=mls)
    for y, x in zip(G.decode_group_numpy(blob), xs):
        assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(y, x)
    for y, x in zip(G.decode_group_reference(blob), xs):
        assert np.array_equal(y, x)
    pg = G.parse_group(blob)
    assert pb is None or pg.prob_bits == pb
    # the uniform tensor does not pay: stored raw; the ramp picks delta
    kinds = [(m.header.coding, m.header.predictor) for m in pg.members]
    assert kinds[5][0] == fmt.CODING_RAW and kinds[2] == (fmt.CODING_RANS, fmt.PRED_DELTA)


def test_jax_decoder_matches_reference_on_subsets():
    rng = np.random.default_rng(1)
    xs = _mixed(rng)
    blob = G.encode_group(xs, (16, 16), 4, 13)
    ref = G.decode_group_reference(blob)
    for which in (None, [6, 0, 5]):
        got = D.decode_group(blob, which)
        idx = range(len(xs)) if which is None else which
        for y, k in zip(got, idx):
            y = np.asarray(y)
            assert y.dtype == xs[k].dtype and np.array_equal(y, ref[k]) and np.array_equal(y, xs[k])


def test_table_hand_computed():
    """One symbol (byte 0) with all 4096 slots at prob_bits 12. In int8 order byte 0 is position 128:
    deltas are 0 x128, +4096, -4096, 0 x126 -> zigzag 0, 8192, 8191. Rice cost sum((z >> k) + 1 + k)
    is 254(k+1) + (8192 >> k) + (8191 >> k) + 2(k+1): 2047 bits for k = 5 and k = 6 (5 wins, first),
    so the table is 1 + ceil(2047 / 8) = 257 bytes."""
    f = np.zeros(256, np.int64)
    f[0] = 4096
    tb = tables.rice_table(f)
    assert tb[0] == 5 and len(tb) == 257
    assert np.array_equal(tables.parse_shared_table(tb, 12), f)
    # the version-1 coding is shorter here (bitmap + one 12-bit value): pack_table picks it
    assert (
        tables.pack_shared_table(f) == b"\xff" + tables.pack_bitmap_table(f) and len(tables.pack_shared_table(f)) == 36
    )
    assert np.array_equal(tables.parse_shared_table(tables.pack_shared_table(f), 12), f)
    rng = np.random.default_rng(2)
    for pb, n, sigma in ((12, 200000, 40), (14, 200000, 40), (16, 500, 20)):
        c = np.bincount(
            np.clip(np.rint(rng.normal(0, sigma, n)), -128, 127).astype(np.int8).view(np.uint8), minlength=256
        )
        f = rans.normalize_freqs(c, pb)
        tb = tables.pack_shared_table(f)
        assert np.array_equal(tables.parse_shared_table(tb, pb), f)
        # smooth histograms: Rice-coded differences beat the fixed width; sparse: version-1 coding
        if n > 1000:
            assert tb[0] < 16 and len(tb) < 0.7 * len(tables.pack_bitmap_table(f))
        else:
            assert tb[0] == 255 and len(tb) == 1 + len(tables.pack_bitmap_table(f))


def test_pooled_bound_within_half_percent():
    """8 trained-weight-like 128x128 int8 tensors (discretised Gaussians of different widths): the
    group blob (header, table, directory, lanes, payload) is within 0.5% of the order-0 entropy of
    the pooled symbols; one version-1 blob per tensor is not (own table and header each)."""
    rng = np.random.default_rng(3)
    xs = [
        np.clip(np.rint(rng.normal(0, s, (128, 128))), -127, 127).astype(np.int8)
        for s in (20, 25, 30, 35, 40, 30, 25, 45)
    ]
    blob = G.encode_group(xs, min_lane_symbols=4096)
    bound = tl.entropy_bits(group_symbols(blob, xs)) / 8
    pooled = tl.entropy_bits(sum(np.bincount(x.view(np.uint8).ravel(), minlength=256) for x in xs)) / 8
    assert bound == pytest.approx(pooled)
    assert len(blob) < 1.005 * bound
    per_layer = sum(len(fmt.encode_layer(x, min_lane_symbols=4096)) for x in xs)
    assert per_layer > len(blob)


def test_errors():
    rng = np.random.default_rng(4)
    xs = [source("gauss", (20, 20), rng), source("heavy", (30,), rng)]
    blob = G.encode_group(xs, (8, 8), 2, 12)
    with pytest.raises(CodecError, match="magic"):
        G.parse_group(b"JXRL" + blob[4:])
    with pytest.raises(CodecError, match="version"):
        G.parse_group(reseal_group(blob[:4] + struct.pack("<H", 3) + blob[6:]))
    with pytest.raises(CodecError, match="length"):
        G.parse_group(blob[:-1])
    with pytest.raises(CodecError, match="CRC"):
        b = bytearray(blob)
        b[-3] ^= 4
        G.parse_group(bytes(b))
    with pytest.raises(CodecError, match="no tensor 5"):
        G.decode_group_numpy(blob, [5])
    b = bytearray(blob)  # table: break the frequency sum behind valid CRCs
    b[G.HEADER_SIZE + 20] ^= 0x10
    with pytest.raises(CodecError, match="table"):
        G.parse_group(reseal_group(bytes(b)))
    with pytest.raises(ShapeError):
        G.encode_group([np.zeros((0, 3), np.int8)])
    with pytest.raises(ConfigError):
        G.encode_group([])
    with pytest.raises(ConfigError):
        G.encode_group(xs, prob_bits=11)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 30),
            st.integers(1, 30),
            st.sampled_from(["gauss", "heavy", "uniform", "single", "ramp"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 9),
    st.integers(1, 12),
    st.sampled_from([None, 12, 16]),
    st.integers(0, 2**31),
)
def test_property_roundtrip(specs, tr, lanes, pb, seed):
    rng = np.random.default_rng(seed)
    xs = [source(k, (r, c) if two else (r * c,), rng) for r, c, k, two in specs]
    blob = G.encode_group(xs, (tr, tr + 3), lanes, pb)
    for y, x in zip(G.decode_group_numpy(blob), xs):
        assert y.shape == x.shape and np.array_equal(y, x)


def test_fuzz_group(watchdog):
    """1,200 mutations (bit flips, truncations, splices, overwrites; every other one resealed with
    valid CRCs): each decodes to the originals or raises CodecError; then 40 resealed payload/index
    bit flips through the JAX decoder."""
    rng = np.random.default_rng(5)
    xs = [source("heavy", (24, 20), rng), source("gauss", (50,), rng), source("ramp", (6, 9), rng)]
    blob = G.encode_group(xs, (8, 8), 3, 12)
    other = G.encode_group([source("gauss", (12, 12), rng)], (8, 8), 2, 14)
    errors = 0
    for m in mutations(blob, other, rng, 1200, reseal_group):
        try:
            ys = G.decode_group_numpy(m)
        except CodecError:
            errors += 1
            continue
        assert len(ys) == len(xs) and all(np.array_equal(y, x) for y, x in zip(ys, xs))
    assert errors > 1000
    pg = G.parse_group(blob)
    p0 = len(blob) - len(pg.payload)
    idx0 = p0 - 2 * sum(m.lane_words.size for m in pg.members)
    jerr = 0
    for _ in range(40):
        b = bytearray(blob)
        b[int(rng.integers(idx0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        try:
            ys = D.decode_group(reseal_group(bytes(b)))
        except CodecError:
            jerr += 1
            continue
        assert all(np.array_equal(np.asarray(y), x) for y, x in zip(ys, xs))
    assert jerr > 25
