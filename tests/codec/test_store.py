import ml_dtypes
import numpy as np
import pytest

from jaxsys.codec import sources, store
from jaxsys.codec.format import CodecError
from jaxsys.codec.quant import dequantize_int8, quantize_int8
from jaxsys.errors import DataError

OPTS = store.LayerOpts(tile_shape=(16, 16), lanes=4)


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "emb": (rng.normal(0, 0.02, (40, 24))).astype(np.float32),
        "blk/0/w": (rng.normal(0, 0.05, (24, 3, 8))).astype(ml_dtypes.bfloat16),
        "blk/0/b": rng.normal(0, 1, 24).astype(np.float16),
        "q": np.clip(np.rint(rng.normal(0, 9, (30, 20))), -127, 127).astype(np.int8),
        "ids": rng.integers(0, 50, (7,)).astype(np.int64),
        "scalar": np.array(3.5, np.float32),
    }


def test_lossless_roundtrip_all_kinds(tmp_path):
    t = _tensors()
    path = store.write_store(tmp_path / "m.jxc", t, opts=OPTS)
    st = store.Store.open(path)
    assert st.names == list(t)
    kinds = {n: st.entry(n).kind for n in st.names}
    assert kinds == {
        "emb": "float",
        "blk/0/w": "float",
        "blk/0/b": "float",
        "q": "int",
        "ids": "bytes",
        "scalar": "float",
    }
    for n, x in t.items():
        y = st.decode(n)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert y.tobytes() == x.tobytes(), n
    for n in ("emb", "q", "blk/0/w"):
        y = np.asarray(st.decode_jax(n))
        assert y.dtype == t[n].dtype and np.array_equal(y.view(np.uint8), t[n].view(np.uint8))


def test_int8_mode(tmp_path):
    t = {"w": np.random.default_rng(1).normal(0, 0.1, (32, 16)).astype(np.float32)}
    st = store.Store(store.encode_store(t, mode="int8", opts=OPTS))
    q, s = quantize_int8(t["w"], per_channel=True)
    assert np.array_equal(st.decode("w"), dequantize_int8(q, s))
    assert np.allclose(np.asarray(st.decode_jax("w")), dequantize_int8(q, s), rtol=0, atol=0)


def test_corrupted_tensor_named():
    data = bytearray(store.encode_store(_tensors(), opts=OPTS))
    st = store.Store(bytes(data))
    p = st.entry("emb").parts[3]  # a float plane blob (own part)
    start = len(data) - len(st._data)
    data[start + p.offset + p.length // 2] ^= 0xFF
    bad = store.Store(bytes(data))
    with pytest.raises(CodecError, match="tensor 'emb'"):
        bad.decode("emb")
    assert np.array_equal(bad.decode("q"), _tensors()["q"])


def test_corrupted_group_member_named():
    """A damaged byte inside one member's lane words of the shared-table group names that member;
    the other members still decode (the damage is located after the group CRC fails)."""
    rng = np.random.default_rng(3)
    t = {f"w{i}": rng.normal(0, 0.1, (24, 16)).astype(np.float32) for i in range(3)}
    data = bytearray(store.encode_store(t, mode="int8", opts=OPTS))
    st = store.Store(bytes(data))
    pg = st.parsed_group()
    m = pg.members[st.member("w1")]
    g = st.group
    blob_start = len(data) - len(st._data) + g.offset
    payload_start = blob_start + g.length - len(pg.payload)
    data[payload_start + 2 * m.word_base + 7] ^= 0x20
    bad = store.Store(bytes(data))
    with pytest.raises(CodecError, match="tensor 'w1'"):
        bad.decode("w0")
    with pytest.raises(CodecError, match="tensor 'w1'"):
        bad.decode_jax("w2")


def test_container_header_errors():
    data = store.encode_store({"a": np.ones((4, 4), np.int8)}, opts=OPTS)
    with pytest.raises(CodecError, match="magic"):
        store.Store(b"NOPE" + data[4:])
    with pytest.raises(CodecError, match="length"):
        store.Store(data[:-1])
    with pytest.raises(CodecError, match="CRC"):
        b = bytearray(data)
        b[30] ^= 1
        store.Store(bytes(b))
    with pytest.raises(CodecError, match="no tensor"):
        store.Store(data).decode("zz")


def test_safetensors_io_and_sources(tmp_path):
    t = _tensors()
    del t["scalar"]
    p = sources.write_safetensors(tmp_path / "m.safetensors", t)
    back = sources.read_safetensors(p)
    for n in t:
        assert back[n].dtype == t[n].dtype and np.array_equal(back[n].view(np.uint8), t[n].view(np.uint8))
    from safetensors.numpy import load_file  # independent reader (no bfloat16 in numpy: skip it)

    ref = load_file(str(sources.write_safetensors(tmp_path / "f.safetensors", {"emb": t["emb"]})))
    assert np.array_equal(ref["emb"], t["emb"])
    (tmp_path / "w.json").write_text('{"wte": [[0.5, 1.0], [2.0, 3.0]], "n": {"b": [1.0]}}')
    src = sources.load_tensors(tmp_path / "w.json")
    assert set(src) == {"wte", "n/b"} and src["wte"].dtype == np.float32
    with pytest.raises(DataError):
        sources.load_tensors(tmp_path / "missing.npy")


def test_version1_containers_are_refused():
    """Container version 1 (one blob + table per int8 tensor) is gone: the shared-table group is
    smaller for every model tried, and no version-1 data exists outside old tests."""
    data = bytearray(store.encode_store({"a": np.ones((4, 4), np.int8)}, opts=OPTS))
    data[4] = 1
    with pytest.raises(CodecError, match="version 1"):
        store.Store(bytes(data))


def test_shared_table_store_is_smaller_than_layer_blobs():
    from jaxsys.codec import format as fmt

    rng = np.random.default_rng(6)
    t = {f"l{i}": rng.normal(0, 0.05, (48, 32)).astype(np.float32) for i in range(6)}
    shared = store.encode_store(t, mode="int8")
    per = sum(len(fmt.encode_layer(quantize_int8(w, per_channel=True)[0], min_lane_symbols=256)) for w in t.values())
    st = store.Store(shared)
    assert st.group.length < per
    for n, w in t.items():
        assert np.array_equal(np.asarray(st.decode_jax(n)), st.decode(n))
