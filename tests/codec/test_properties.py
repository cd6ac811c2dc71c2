"""Hypothesis: any 1-D/2-D int8/uint8 array round-trips through the host decoders for any tile
shape, lane count and precision; the vectorised decoder equals the scalar reference."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.codec import format as fmt


@st.composite
def arrays(draw):
    ndim = draw(st.sampled_from([1, 2]))
    shape = tuple(draw(st.integers(1, 40)) for _ in range(ndim))
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    dist = draw(st.sampled_from(["k-symbols", "gauss", "uniform", "runs"]))
    if dist == "k-symbols":
        alphabet = rng.choice(256, draw(st.integers(1, 6)), replace=False)
        v = rng.choice(alphabet, n)
    elif dist == "gauss":
        v = np.rint(rng.normal(0, draw(st.floats(0.1, 60)), n))
    elif dist == "uniform":
        v = rng.integers(0, 256, n)
    else:
        v = np.repeat(rng.integers(0, 256, n // 5 + 1), 5)[:n]
    dtype = draw(st.sampled_from([np.int8, np.uint8]))
    return (np.asarray(v, np.int64) % 256).astype(np.uint8).view(dtype).reshape(shape)


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(),
    tr=st.integers(1, 24),
    tc=st.integers(1, 24),
    lanes=st.integers(1, 40),
    pb=st.integers(12, 16),
    pred=st.sampled_from(["auto", "none", "delta"]),
    allow_raw=st.booleans(),
)
def test_roundtrip_property(x, tr, tc, lanes, pb, pred, allow_raw):
    blob = fmt.encode_layer(x, (tr, tc), lanes, pb, predictor=pred, allow_raw=allow_raw)
    y = fmt.decode_layer_numpy(blob)
    assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(y, x)
    assert np.array_equal(fmt.decode_layer_reference(blob), x)
    info = fmt.layer_info(blob)
    assert info["blob_bytes"] == len(blob)
