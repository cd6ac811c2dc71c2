import ml_dtypes
import numpy as np
import pytest

from jaxsys.codec import store
from jaxsys.codec.format import CodecError
from jaxsys.codec.quant import dequantize_int8, quantize_int8
from jaxsys.errors import DataError

pytestmark = pytest.mark.x64  # float64 until this module is checked in float32

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
    kinds = {n: st.entry(n)["kind"] for n in st.names}
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
    p = st.entry("emb")["parts"][3]  # a float plane blob (own part)
    start = len(data) - len(st._data)
    data[start + p["offset"] + p["length"] // 2] ^= 0xFF
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
    blob_start = len(data) - len(st._data) + g["offset"]
    payload_start = blob_start + g["length"] - len(pg.payload)
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
    p = store.write_safetensors(tmp_path / "m.safetensors", t)
    back = store.read_safetensors(p)
    for n in t:
        assert back[n].dtype == t[n].dtype and np.array_equal(back[n].view(np.uint8), t[n].view(np.uint8))
    from safetensors.numpy import load_file  # independent reader (no bfloat16 in numpy: skip it)

    ref = load_file(str(store.write_safetensors(tmp_path / "f.safetensors", {"emb": t["emb"]})))
    assert np.array_equal(ref["emb"], t["emb"])
    (tmp_path / "w.json").write_text('{"wte": [[0.5, 1.0], [2.0, 3.0]], "n": {"b": [1.0]}}')
    src = store.load_tensors(tmp_path / "w.json")
    assert set(src) == {"wte", "n/b"} and src["wte"].dtype == np.float32
    with pytest.raises(DataError):
        store.load_tensors(tmp_path / "missing.npy")


# a version-1 container written by the previous release (one blob + table per tensor), from
# rng = default_rng(5): w = normal(0, 0.1, (6, 10)) float32, q = integers(-5, 6, (4, 12)) int8,
# encode_store(mode="int8", LayerOpts(tile_shape=(4, 8), lanes=2, min_lane_symbols=0))
V1_CONTAINER = (
    "4a5843530100000036010000675ffba524010000000000007b2276657273696f6e223a312c2274656e736f7273223a5b"
    "7b226e616d65223a2277222c226474797065223a22666c6f61743332222c227368617065223a5b362c31305d2c226b69"
    "6e64223a227138222c227065725f6368616e6e656c223a747275652c227061727473223a5b7b226f6666736574223a30"
    "2c226c656e677468223a3134302c22637263223a333632343630363239397d2c7b226f6666736574223a3134302c226c"
    "656e677468223a32342c22637263223a323737323331323439387d5d7d2c7b226e616d65223a2271222c226474797065"
    "223a22696e7438222c227368617065223a5b342c31325d2c226b696e64223a22696e74222c227061727473223a5b7b22"
    "6f6666736574223a3136342c226c656e677468223a3132382c22637263223a333635303338343031307d5d7d5d7d4a58"
    "524c01005000010201000e000200060000000a0000000400000008000000040000005000000000000000500000000000"
    "0000500000003c00000065f094a9a11f00004ea6030065f094a9e87a26fac299ed215809d5c33a7f14a6ba750f81faab"
    "d2dcc92bfbd2204081ecb4f38702fce39edb9a8115984a2e8111ba020382f1f032c227c7efd44c1e7f224cb8a83a69c4"
    "b23a0392a93ab7dd8b3af12fce3a5af8fa3a4a58524c01005000010201000e000200040000000c000000040000000800"
    "000002000000500000000000000050000000000000005000000030000000afcc37e70e15000012180200afcc37e718c0"
    "aadd0502020005fdfe0202fcfc02040105fffe03fbfdfdfffc0304fffb02fc01fc0502050102ff03fcfcfe02000405ff"
    "ff01"
)


def test_version1_container_still_decodes():
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.1, (6, 10)).astype(np.float32)
    q = rng.integers(-5, 6, (4, 12)).astype(np.int8)
    st = store.Store(bytes.fromhex(V1_CONTAINER))
    assert st.version == 1 and st.group is None
    qq, s = quantize_int8(w, per_channel=True)
    assert np.array_equal(st.decode("q"), q) and np.array_equal(np.asarray(st.decode_jax("q")), q)
    assert np.array_equal(st.decode("w"), dequantize_int8(qq, s))


def test_shared_table_store_is_smaller_and_optional():
    rng = np.random.default_rng(6)
    t = {f"l{i}": rng.normal(0, 0.05, (48, 32)).astype(np.float32) for i in range(6)}
    shared = store.encode_store(t, mode="int8")
    per = store.encode_store(t, mode="int8", opts=store.LayerOpts(shared_table=False))
    assert store.Store(shared).version == 2 and store.Store(per).version == 1
    assert len(shared) < len(per)
    a, b = store.Store(shared), store.Store(per)
    for n in t:
        assert np.array_equal(a.decode(n), b.decode(n))
        assert np.array_equal(np.asarray(a.decode_jax(n)), b.decode(n))
