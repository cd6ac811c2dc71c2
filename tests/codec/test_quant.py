import numpy as np
import pytest

from jaxsys.codec.quant import dequantize_int8, quantize_int8
from jaxsys.errors import ConfigError, DataError, ShapeError


def test_per_tensor_reference_values():
    w = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    q, s = quantize_int8(w)
    # scale = 2/127; 1 * 127/2 = 63.5 -> 64 (round half to even), 0.5 -> 31.75 -> 32, 0.25 -> 15.875 -> 16
    assert s.shape == () and np.isclose(s, 2 / 127)
    assert q.tolist() == [[64, -127], [32, 16]]


def test_per_channel_reference_values():
    w = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    q, s = quantize_int8(w, per_channel=True)
    assert np.allclose(s, [2 / 127, 0.5 / 127])
    assert q.tolist() == [[64, -127], [127, 64]]  # 0.25 * 254 = 63.5 -> 64


@pytest.mark.parametrize("per_channel", [False, True])
def test_error_bound_and_inverse(per_channel):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (16, 24)).astype(np.float32) * rng.uniform(0.1, 3, (16, 1)).astype(np.float32)
    q, s = quantize_int8(w, per_channel=per_channel)
    back = dequantize_int8(q, s)
    bound = (s[:, None] if per_channel else s) / 2 + 1e-7
    assert np.all(np.abs(back - w) <= bound)
    assert q.min() >= -127 and q.max() <= 127


def test_zero_and_errors():
    q, s = quantize_int8(np.zeros((3, 3), np.float32), per_channel=True)
    assert np.all(q == 0) and np.all(s == 1)
    with pytest.raises(DataError):
        quantize_int8(np.array([1.0, np.nan]))
    with pytest.raises(DataError):
        quantize_int8(np.array([1, 2]))
    with pytest.raises(ShapeError):
        quantize_int8(np.ones(3), per_channel=True)
    with pytest.raises(ConfigError):
        dequantize_int8(np.zeros((2, 3), np.int8), np.ones(3))
