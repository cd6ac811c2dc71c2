"""jaxsys.codec.params: the generic "parameters stored compressed" API that a model (the GPT) consumes."""

import jax
import numpy as np
import pytest

from jaxsys.codec import params as cp
from jaxsys.codec.errors import CodecError
from tests.codec.helpers import flip_group_flag

OPTS = cp.LayerOpts(tile_shape=(16, 16), lanes=4)


def _params():
    rng = np.random.default_rng(0)
    return {
        "embed": {"w": rng.normal(0, 0.1, (20, 12)).astype(np.float32)},
        "layers": [
            {"w": rng.normal(0, 0.1, (12, 12)).astype(np.float32), "b": rng.normal(0, 1, (12,)).astype(np.float32)}
            for _ in range(2)
        ],
    }


def test_flatten_names_pytree_leaves_and_keeps_flat_order():
    flat = cp.flatten(_params())
    assert sorted(flat) == ["embed/w", "layers/0/b", "layers/0/w", "layers/1/b", "layers/1/w"]
    assert list(cp.flatten({"z": np.ones(2), "a": np.ones(3)})) == ["z", "a"]


@pytest.mark.parametrize("mode", ["lossless", "int8"])
def test_compress_decode_and_open(mode):
    p = _params()
    data = cp.compress_params(p, mode, opts=OPTS)
    host = cp.decode_params(data)
    flat = cp.flatten(p)
    for n, x in flat.items():
        assert host[n].dtype == x.dtype and host[n].shape == x.shape
        if mode == "lossless":
            assert host[n].tobytes() == x.tobytes()
        else:
            assert np.abs(host[n] - x).max() <= np.abs(x).max() / 127
    groups = {"embed": ["embed/w"], "l0": ["layers/0/w", "layers/0/b"], "l1": ["layers/1/w", "layers/1/b"]}
    cache = cp.open_params(data, groups, cache_groups=1)
    for g, names in groups.items():
        cache.prefetch(g)
        w = cache.get(g)
        for n in names:
            assert isinstance(w[n], jax.Array) and np.array_equal(np.asarray(w[n]), host[n])
    cache.check()
    assert cache.stats()["prefetch_hits"] == 3


@pytest.mark.parametrize("pack_groups", [True, False])
def test_open_refuses_metadata_the_device_would_trust(pack_groups):
    """A flipped delta flag behind valid CRCs: the pack is verified against the raw CRC32 at load."""
    rng = np.random.default_rng(1)
    t = {"a": np.clip(np.rint(rng.normal(0, 9, (24, 20))), -127, 127).astype(np.int8), "b": np.ones(30, np.int8)}
    data = flip_group_flag(cp.compress_params(t, opts=OPTS), 4)
    with pytest.raises(CodecError, match="tensor 'a'"):
        cp.open_params(data, {"g": ["a", "b"]}, pack_groups=pack_groups)
