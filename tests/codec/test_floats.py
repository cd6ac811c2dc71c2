import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxsys.codec import floats

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]


def _specials(dtype, rng):
    nb = np.dtype(dtype).itemsize
    U = np.uint16 if nb == 2 else np.uint32
    fin = ml_dtypes.finfo(dtype)
    vals = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            float(fin.max),
            float(fin.min),
            float(fin.smallest_subnormal),
            -float(fin.smallest_subnormal),
            1.0,
        ],
        np.float64,
    )
    x = vals.astype(dtype)
    # NaNs with payloads and random bit patterns (denormals included)
    bits = rng.integers(0, 2 ** (8 * nb), 200, dtype=np.uint64).astype(U)
    nan_payload = np.array([0x7FC1 if nb == 2 else 0x7FC00123, 0xFFFF if nb == 2 else 0xFFFFFFFF], U)
    return np.concatenate([x.view(U), bits, nan_payload]).view(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_planes_bit_exact(dtype):
    rng = np.random.default_rng(0)
    x = _specials(dtype, rng).reshape(-1, 2)
    planes = floats.split_planes(x)
    assert len(planes) == np.dtype(dtype).itemsize and all(p.dtype == np.uint8 for p in planes)
    back = floats.merge_planes(planes, np.dtype(dtype).name)
    assert back.dtype == x.dtype and np.array_equal(back.view(np.uint8), x.view(np.uint8))
    dev = floats.merge_planes_jax([jnp.asarray(p) for p in planes], np.dtype(dtype).name)
    assert np.array_equal(np.asarray(dev).view(np.uint8), x.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_top_plane_is_the_exponent(dtype):
    x = np.array([1.0, -1.0, 2.0, 0.5], np.float32).astype(dtype)
    top = floats.split_planes(x)[-1]
    assert top.tolist() == [127, 127, 128, 126]


def test_exponent_entropy_bits():
    """Two exponents, equally often: 1 bit per value."""
    x = np.array([1.0, 2.0, 1.5, 3.0], np.float32)
    assert floats.exponent_entropy_bits(x) == pytest.approx(4.0)
