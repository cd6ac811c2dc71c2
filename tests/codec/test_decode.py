"""JAX decoder == numpy reference decoder. Shapes are chosen to share one compiled kernel bucket
(<= 64 lanes in all, <= 64 steps, <= 4096 payload words)."""

import jax
import numpy as np
import pytest

from jaxsys.codec import decode as D
from jaxsys.codec import format as fmt
from jaxsys.codec.format import CodecError
from tests.codec.helpers import reseal, source

CASES = [  # kind, shape, tile, lanes, prob_bits
    ("gauss", (24, 40), (8, 16), 4, 12),
    ("heavy", (37, 53), (16, 16), 5, 14),
    ("uniform", (300,), (4, 8), 3, 16),
    ("ramp", (33, 64), (32, 32), 16, 14),
    ("constant", (9, 7), (64, 64), 32, 13),
    ("all256", (32, 64), (32, 64), 32, 12),
    ("gauss", (32, 64), (16, 32), 8, 14),  # full tiles, lanes | tile width: one-transpose path
]


@pytest.mark.parametrize("kind,shape,tile,lanes,pb", CASES)
def test_jax_equals_reference(kind, shape, tile, lanes, pb):
    rng = np.random.default_rng(3)
    x = source(kind, shape, rng, np.int8 if kind != "uniform" else np.uint8)
    blob = fmt.encode_layer(x, tile, lanes, pb, allow_raw=False)
    y = D.decode_layer(blob, verify_raw=True)
    assert isinstance(y, jax.Array) and y.dtype == x.dtype and y.shape == x.shape
    ref = fmt.decode_layer_reference(blob)
    assert np.array_equal(np.asarray(y), ref)
    assert np.array_equal(ref, x)


def test_one_compiled_kernel_for_many_layers():
    rng = np.random.default_rng(0)
    D.decode_layer(fmt.encode_layer(source("gauss", (20, 20), rng), (8, 8), 4, 14, allow_raw=False))
    n0 = D.decode_kernel._cache_size()
    for shape, pb in [((21, 19), 14), ((16, 30), 14), ((40,), 14)]:  # one kernel per prob_bits
        x = source("heavy", shape, rng)
        y = D.decode_layer(fmt.encode_layer(x, (8, 8), 4, pb, allow_raw=False))
        assert np.array_equal(np.asarray(y), x)
    assert D.decode_kernel._cache_size() == n0


def test_raw_layer_on_device():
    x = source("uniform", (10, 12), np.random.default_rng(1))
    blob = fmt.encode_layer(x)
    assert fmt.parse_header(blob).coding == fmt.CODING_RAW
    assert np.array_equal(np.asarray(D.decode_layer(blob)), x)


def test_single_transfer_pack_layout():
    x = source("gauss", (24, 40), np.random.default_rng(2))
    blob = fmt.encode_layer(x, (8, 16), 4, 12, allow_raw=False)
    pack, kargs, geom = D.prepare(blob)
    assert pack.dtype == np.uint32 and pack.ndim == 1
    p = fmt.parse_layer(blob)
    assert np.array_equal(pack[16 : 16 + 256], p.freq)
    o = 16 + 256 + 3 * kargs["n_lanes"]
    assert pack.view(np.uint8)[4 * o : 4 * o + p.header.payload_size].tobytes() == bytes(p.payload)


def test_device_check_catches_stream_corruption_behind_valid_crcs():
    x = source("gauss", (24, 40), np.random.default_rng(4))
    blob = fmt.encode_layer(x, (8, 16), 4, 12, allow_raw=False)
    h = fmt.parse_header(blob)
    caught = 0
    for pos in range(h.payload_off + 4, h.payload_off + 40, 3):
        b = bytearray(blob)
        b[pos] ^= 0x21
        try:
            y = D.decode_layer(reseal(bytes(b)), verify_raw=True)
        except CodecError:
            caught += 1
            continue
        assert np.array_equal(np.asarray(y), x)  # never silently wrong
    assert caught >= 10


def test_bucket():
    assert D.bucket(1, 64) == 64
    assert D.bucket(2048, 64) == 2048
    b = D.bucket(2049, 64)
    assert 2049 <= b <= 2049 * 1.125 + 1
