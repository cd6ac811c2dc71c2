"""Hypothesis fuzzing of the container index and the blob headers, behind valid CRCs: every input either
decodes to the original values or raises the project's error (CodecError on the host path; on the
device path also DataError, for a 64-bit dtype JAX cannot hold with x64 off).

Example counts (bounded, stated here): 250 index mutations through the numpy path, 40 through the JAX
path, 150 layer-header and 150 group-header field values, 60 container-header values. The module runs
in about 6 s on one core.
"""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec import store
from jaxsys.codec.errors import CodecError
from jaxsys.codec.index import as_2d
from jaxsys.errors import JaxsysError
from tests.codec.helpers import open_container, replace_blob, reseal, reseal_group, seal_container

OPTS = store.LayerOpts(tile_shape=(8, 8), lanes=3, min_lane_symbols=0, shared_lane_symbols=16)


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _bases():
    rng = np.random.default_rng(0)
    q8 = {
        "q": np.clip(np.rint(rng.normal(0, 9, (12, 10))), -127, 127).astype(np.int8),
        "u": rng.integers(0, 40, (30,)).astype(np.uint8),
        "w": rng.normal(0, 0.1, (6, 2, 5)).astype(np.float32),
        "b": rng.normal(0, 0.1, (9,)).astype(np.float16),
        "ids": rng.integers(-300, 300, (4, 3)).astype(np.int16),
    }
    lossless = {
        "f": rng.normal(0, 0.02, (10, 12)).astype(np.float32),
        "h": rng.normal(0, 1, (7, 3)).astype(ml_dtypes.bfloat16),
        "q": np.clip(np.rint(rng.normal(0, 9, (5, 5))), -127, 127).astype(np.int8),
    }
    out = []
    for t, mode in ((q8, "int8"), (lossless, "lossless")):
        data = store.encode_store(t, mode=mode, opts=OPTS)
        st_ = store.Store(data)
        out.append((data, {n: (st_.entry(n).kind, st_.decode(n)) for n in st_.names}))
    return out


BASES = _bases()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2, 3, 4, 5, 7, 2**31, 2**32 - 1, 2**40, -1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["int", "q8", "float", "bytes", "int8", "uint8", "float16", "bfloat16", "float32", "object"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["offset", "length", "crc", "x"]), c),
    max_leaves=5,
)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


@st.composite
def mutated_containers(draw):
    """A base container with one index value replaced, nudged or deleted (index CRC resealed)."""
    b = draw(st.integers(0, len(BASES) - 1))
    data, originals = BASES[b]
    ver, index, body = open_container(data)
    paths = [p for p in _paths(index) if p]
    path = draw(st.sampled_from(paths))
    parent = index
    for k in path[:-1]:
        parent = parent[k]
    key, old = path[-1], parent[path[-1]]
    op = draw(st.sampled_from(["replace", "nudge", "delete"]))
    if op == "delete" and isinstance(parent, dict):
        del parent[key]
    elif op == "nudge" and type(old) is int:
        parent[key] = old + draw(st.sampled_from([-1, 1, 2, 0.5, old, 2**31]))
    elif op == "nudge" and isinstance(old, list) and old:
        parent[key] = list(reversed(old)) if draw(st.booleans()) else old + [old[-1]]
    else:
        parent[key] = draw(json_values)
    return seal_container(ver, index, body), originals


def _matches(name, y, originals, k: int) -> bool:
    """Decoded values equal the original tensor's: the same bytes and layer view (a trailing 1 in the
    shape is invisible to the blobs, and so is a same-size reinterpretation such as float16 <->
    bfloat16 planes); a quantised tensor's dtype is index metadata, so it may decode to the same
    values in another float dtype. A renamed tensor is compared with the original at its position k."""
    kind, x = originals[name] if name in originals else list(originals.values())[k]
    if as_2d(y.shape) != as_2d(x.shape):
        return False
    if kind == "q8" and y.dtype != x.dtype:
        return np.array_equal(y, x.astype(np.float32).astype(y.dtype))
    return y.dtype.itemsize == x.dtype.itemsize and y.tobytes() == x.tobytes()


@fuzz(250)
@given(mutated_containers())
def test_index_mutations_numpy(case):
    data, originals = case
    try:
        s = store.Store(data)
        got = {n: s.decode(n) for n in s.names}
    except CodecError:
        return
    for k, (n, y) in enumerate(got.items()):
        assert _matches(n, y, originals, k), n


@fuzz(40)
@given(mutated_containers())
def test_index_mutations_jax(case):
    data, originals = case
    try:
        s = store.Store(data)
        got = {n: np.asarray(s.decode_jax(n)) for n in s.names}
    except JaxsysError:
        return
    for k, (n, y) in enumerate(got.items()):
        assert _matches(n, y, originals, k), n


def _field_values(layout, skip):
    fields = [n for n in layout.names if n not in skip]
    codes = dict(zip(layout.names, layout.struct.format[1:].replace("4s", "s")))
    limits = {"B": 255, "H": 2**16 - 1, "I": 2**32 - 1, "Q": 2**64 - 1}

    @st.composite
    def draw(draw_):
        name = draw_(st.sampled_from(fields))
        hi = limits[codes[name]]
        return name, draw_(
            st.integers(0, 8) | st.integers(0, hi) | st.sampled_from([hi, min(hi, 2**31), min(hi, 2**16)])
        )

    return draw()


@fuzz(150)
@given(_field_values(fmt.HEADER, skip=("magic", "payload_crc", "meta_crc")))
def test_layer_header_fields(field):
    name, value = field
    x = np.clip(np.rint(np.random.default_rng(1).normal(0, 6, (20, 14))), -127, 127).astype(np.int8)
    blob = bytearray(fmt.encode_layer(x, (8, 8), 3, 12, allow_raw=False))
    code = fmt.HEADER.struct.format[1:].replace("4s", "s")[fmt.HEADER.names.index(name)]
    struct.pack_into("<" + code, blob, fmt.HEADER.offset(name), value)
    try:
        y = fmt.decode_layer_numpy(reseal(bytes(blob)))
    except CodecError:
        return
    assert y.tobytes() == x.tobytes()


@fuzz(150)
@given(_field_values(G.HEADER, skip=("magic", "payload_crc", "meta_crc")))
def test_group_header_fields(field):
    name, value = field
    rng = np.random.default_rng(2)
    xs = [np.clip(np.rint(rng.normal(0, 6, s)), -127, 127).astype(np.int8) for s in ((9, 11), (17,))]
    blob = bytearray(G.encode_group(xs, (8, 8), 3, 12))
    code = G.HEADER.struct.format[1:].replace("4s", "s")[G.HEADER.names.index(name)]
    struct.pack_into("<" + code, blob, G.HEADER.offset(name), value)
    try:
        ys = G.decode_group_numpy(reseal_group(bytes(blob)))
    except CodecError:
        return
    assert [y.tobytes() for y in ys] == [x.tobytes() for x in xs]


@fuzz(60)
@given(_field_values(store.HEADER, skip=("magic", "index_crc")))
def test_container_header_fields(field):
    name, value = field
    data, originals = BASES[0]
    b = bytearray(data)
    code = store.HEADER.struct.format[1:].replace("4s", "s")[store.HEADER.names.index(name)]
    struct.pack_into("<" + code, b, store.HEADER.offset(name), value)
    try:
        s = store.Store(bytes(b))
        got = {n: s.decode(n) for n in s.names}
    except CodecError:
        return
    assert all(_matches(n, y, originals, k) for k, (n, y) in enumerate(got.items()))


def test_group_blob_swapped_for_another_group():
    """A different (valid) group blob of the same length behind a valid CRC: every tensor is refused
    or decodes to its own values."""
    data, originals = BASES[0]
    ver, index, body = open_container(data)
    g = index["group"]
    other = G.encode_group([np.ones((12, 10), np.int8)], (8, 8), 3, 12)
    blob = (other + bytes(g["length"]))[: g["length"]]
    replace_blob(body, g, blob)
    s = store.Store(seal_container(ver, index, body))
    for n in ("q", "u", "w"):
        with pytest.raises(CodecError):
            s.decode(n)
    assert json.loads(json.dumps(index))  # the index itself stayed valid JSON
