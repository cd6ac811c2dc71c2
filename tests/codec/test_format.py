import struct
import zlib

import numpy as np
import pytest

from jaxsys.codec import format as fmt
from jaxsys.codec import tiles as tl
from jaxsys.codec.format import CodecError
from jaxsys.errors import ConfigError, DataError, ShapeError
from tests.codec.helpers import reseal, source

KINDS = ["uniform", "constant", "single", "all256", "gauss", "heavy", "ramp"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "shape,tile,lanes,pb",
    [
        ((24, 40), (8, 16), 4, 12),  # exact tiling
        ((37, 53), (16, 16), 5, 14),  # ragged last tiles, lanes not dividing the tile
        ((300,), (4, 8), 3, 16),  # 1-D, ragged last tile
        ((9, 7), (64, 64), 32, 13),  # one tile larger than the array, more lanes than some rows
    ],
)
def test_roundtrip_host_decoders(kind, shape, tile, lanes, pb):
    rng = np.random.default_rng(hash((kind, shape)) % 2**32)
    for dtype in (np.int8, np.uint8):
        x = source(kind, shape, rng, dtype)
        blob = fmt.encode_layer(x, tile, lanes, pb, allow_raw=False)
        y = fmt.decode_layer_numpy(blob)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert np.array_equal(y, x)
        if dtype == np.int8:
            assert np.array_equal(fmt.decode_layer_reference(blob), x)


def test_all_256_symbols_present():
    x = np.arange(256 * 8, dtype=np.int64).astype(np.uint8).reshape(32, 64)
    blob = fmt.encode_layer(x, (16, 16), 8, 12, predictor="none", allow_raw=False)
    assert (fmt.parse_layer(blob).freq > 0).sum() == 256
    assert np.array_equal(fmt.decode_layer_reference(blob), x)


def test_single_symbol_costs_only_overhead():
    x = np.full((64, 64), -3, np.int8)
    blob = fmt.encode_layer(x, (32, 32), 4, 14, predictor="none", allow_raw=False)
    p = fmt.parse_layer(blob)
    assert p.lane_words.max() == 2  # only the flushed state per lane
    assert np.array_equal(fmt.decode_layer_numpy(blob), x)


def test_predictor_chosen_by_entropy():
    rng = np.random.default_rng(0)
    iid = source("gauss", (64, 64), rng)
    smooth = source("ramp", (64, 64), rng)
    assert fmt.parse_header(fmt.encode_layer(iid, allow_raw=False)).predictor == fmt.PRED_NONE
    assert fmt.parse_header(fmt.encode_layer(smooth, allow_raw=False)).predictor == fmt.PRED_DELTA


def test_size_near_entropy_bound():
    rng = np.random.default_rng(1)
    x = np.clip(np.rint(rng.normal(0, 20, (512, 512))), -128, 127).astype(np.int8)
    blob = fmt.encode_layer(x, (256, 256), 32, 14)
    counts = np.bincount(x.view(np.uint8).ravel(), minlength=256)
    bound = tl.entropy_bits(counts) / 8
    assert bound < len(blob) < 1.01 * bound


def test_raw_fallback_when_coding_does_not_pay():
    x = source("uniform", (16, 16), np.random.default_rng(0))
    blob = fmt.encode_layer(x)
    assert fmt.parse_header(blob).coding == fmt.CODING_RAW
    assert np.array_equal(fmt.decode_layer_numpy(blob), x)
    assert np.array_equal(fmt.decode_layer_reference(blob), x)


def test_bad_inputs():
    with pytest.raises(ShapeError):
        fmt.encode_layer(np.zeros((0, 4), np.int8))
    with pytest.raises(ShapeError):
        fmt.encode_layer(np.int8(3))
    with pytest.raises(ShapeError):
        fmt.encode_layer(np.zeros((2, 2, 2), np.int8))
    with pytest.raises(DataError):
        fmt.encode_layer(np.zeros((4, 4), np.float32))
    with pytest.raises(ConfigError):
        fmt.encode_layer(np.zeros((4, 4), np.int8), prob_bits=11)
    with pytest.raises(ConfigError):
        fmt.encode_layer(np.zeros((4, 4), np.int8), lanes=0)
    with pytest.raises(ConfigError):
        fmt.encode_layer(np.zeros((4, 4), np.int8), predictor="lpc")


def _blob():
    x = source("gauss", (40, 48), np.random.default_rng(5))
    return x, fmt.encode_layer(x, (16, 16), 4, 12, allow_raw=False)


def _set(blob, off, fmt_, val, seal=True):
    b = bytearray(blob)
    struct.pack_into(fmt_, b, off, val)
    return reseal(bytes(b)) if seal else bytes(b)


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda b: b[:50], "shorter than"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: _set(b, 4, "<H", 9), "version"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"\0", "trailing"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "payload CRC"),
        (lambda b: b[:90] + bytes([b[90] ^ 4]) + b[91:], "CRC"),
        (lambda b: _set(b, 12, "<B", 11), "prob_bits"),
        (lambda b: _set(b, 16, "<I", 1 << 20), "tile count"),
        (lambda b: _set(b, 16 + 4 * 4, "<I", 5), "tile count"),
        (lambda b: _set(b, 16 + 4 * 9, "<I", 10**6), "offsets do not add up|payload end"),
    ],
)
def test_header_corruption_raises(mutate, msg):
    _, blob = _blob()
    with pytest.raises(CodecError, match=msg):
        fmt.decode_layer_numpy(mutate(blob))


def test_impossible_frequency_table():
    _, blob = _blob()
    h = fmt.parse_header(blob)
    # bump one frequency: the table no longer sums to 2^prob_bits
    b = bytearray(blob)
    b[h.table_off + 33] ^= 1  # lowest bit of the first packed frequency
    with pytest.raises(CodecError, match="sum to"):
        fmt.parse_layer(reseal(bytes(b)))
    b = bytearray(blob)
    b[h.table_off + 32] = 17  # impossible bit width
    with pytest.raises(CodecError, match="bit width"):
        fmt.parse_layer(reseal(bytes(b)))


def test_index_inconsistencies():
    _, blob = _blob()
    h = fmt.parse_header(blob)
    with pytest.raises(CodecError, match="symbol count"):
        fmt.parse_layer(_set(blob, h.index_off + 8, "<I", 3))
    with pytest.raises(CodecError, match="offset"):
        fmt.parse_layer(_set(blob, h.index_off + 12, "<I", 2))
    lw_off = h.index_off + 12 * h.n_tiles
    with pytest.raises(CodecError, match="lane word counts|impossible"):
        fmt.parse_layer(_set(blob, lw_off, "<H", 1))


def test_payload_corruption_behind_valid_crcs_is_caught():
    x, blob = _blob()
    h = fmt.parse_header(blob)
    b = bytearray(blob)
    b[h.payload_off + 10] ^= 0x40
    bad = reseal(bytes(b))
    with pytest.raises(CodecError):
        fmt.decode_layer_numpy(bad)
    with pytest.raises(CodecError):
        fmt.decode_layer_reference(bad)


def test_header_layout_matches_notes():
    x, blob = _blob()
    assert blob[:4] == b"JXRL"
    assert struct.unpack_from("<H", blob, 4)[0] == 1
    assert struct.unpack_from("<H", blob, 6)[0] == fmt.HEADER_SIZE == 80
    assert struct.unpack_from("<II", blob, 16) == (40, 48)
    assert struct.unpack_from("<I", blob, 16 + 4 * 11)[0] == zlib.crc32(x.tobytes())
