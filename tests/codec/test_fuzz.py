"""Fuzz: 1,200 mutated blobs (bit flips, truncations, splices, overwrites; half of them resealed with
valid CRCs so the structural checks are exercised). Every one must decode to the original or raise
CodecError. A SIGALRM watchdog turns a hang into a failure (the loops are bounded by construction)."""

import numpy as np

from jaxsys.codec import decode as D
from jaxsys.codec import format as fmt
from jaxsys.codec.format import CodecError
from tests.codec.helpers import mutations, reseal, source


def test_fuzz_numpy_decoder(watchdog):
    rng = np.random.default_rng(0)
    x = source("heavy", (40, 48), rng)
    blob = fmt.encode_layer(x, (16, 16), 4, 12, allow_raw=False)
    other = fmt.encode_layer(source("gauss", (30, 30), rng), (8, 8), 3, 14, allow_raw=False)
    outcomes = {"ok": 0, "error": 0}
    for m in mutations(blob, other, rng, 1200, reseal):
        try:
            y = fmt.decode_layer_numpy(m)
        except CodecError:
            outcomes["error"] += 1
            continue
        assert y.shape == x.shape and np.array_equal(y, x)
        outcomes["ok"] += 1
    assert outcomes["error"] > 1000


def test_fuzz_jax_decoder(watchdog):
    """Payload/index mutations behind valid CRCs through the device decoder (one compiled kernel)."""
    rng = np.random.default_rng(1)
    x = source("gauss", (40, 48), rng)
    blob = fmt.encode_layer(x, (16, 16), 4, 12, allow_raw=False)
    h = fmt.parse_header(blob)
    errors = 0
    for i in range(60):
        b = bytearray(blob)
        p = int(rng.integers(h.index_off, len(b)))
        b[p] ^= 1 << int(rng.integers(0, 8))
        try:
            y = D.decode_layer(reseal(bytes(b)), verify_raw=bool(i % 2))
        except CodecError:
            errors += 1
            continue
        assert np.array_equal(np.asarray(y), x)
    assert errors > 40
