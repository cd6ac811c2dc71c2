"""Bad inputs found by outside checks (issue 21, items 15-19): each gets a clear error or an exact value.

Containers are altered behind valid CRCs (the blob, the part's CRC in the index and the index CRC
are all resealed), as a hostile or buggy writer would produce them."""

import os
import struct
import tracemalloc
import warnings

import jax
import ml_dtypes
import numpy as np
import pytest

from jaxsys.cli import main
from jaxsys.codec import rans, sources, store
from jaxsys.codec.format import CodecError
from jaxsys.codec.tables import pack_shared_table
from jaxsys.errors import DataError, JaxsysError
from tests.codec.helpers import flip_group_flag, open_container, replace_blob, reseal, reseal_group, seal_container

OPTS = store.LayerOpts(tile_shape=(16, 16), lanes=4)
GROUP_HDR = struct.Struct("<4sHHHBBIIIIIII")


def _gauss_i8(rng, shape):
    return np.clip(np.rint(rng.normal(0, 9, shape)), -127, 127).astype(np.int8)


def _errors_on_both_paths(data: bytes, name: str, match: str = ""):
    """Opening the container or decoding `name` raises CodecError, on the host and on the device path."""
    for decode in ("decode", "decode_jax"):
        with pytest.raises(CodecError, match=match):
            getattr(store.Store(data), decode)(name)


# -- item 15: no silent narrowing on the device path ---------------------------------------------------


def test_decode_jax_does_not_narrow_64_bit_values():
    t = {"ids": np.array([2**40, -5, 7], np.int64), "big": np.array([1e300, -2.5], np.float64)}
    st = store.Store(store.encode_store(t, opts=OPTS))
    for n, x in t.items():
        assert st.decode(n).dtype == x.dtype and np.array_equal(st.decode(n), x)
    assert not jax.config.jax_enable_x64
    for n, x in t.items():
        with pytest.raises(JaxsysError, match=f"{x.dtype}.*jax_enable_x64"):
            st.decode_jax(n)
    jax.config.update("jax_enable_x64", True)
    try:
        for n, x in t.items():
            y = st.decode_jax(n)
            assert y.dtype == x.dtype and np.array_equal(np.asarray(y), x)
    finally:
        jax.config.update("jax_enable_x64", False)


# -- item 16: the device path checks the stored raw CRC ------------------------------------------------


def _int8_store():
    rng = np.random.default_rng(0)
    t = {"a": _gauss_i8(rng, (24, 20)), "b": _gauss_i8(rng, (30,))}
    return t, store.encode_store(t, opts=OPTS)


@pytest.mark.parametrize("bit,what", [(4, "delta"), (1, "int8")])
def test_device_path_checks_raw_crc_of_group_members(bit, what):
    _, data = _int8_store()
    _errors_on_both_paths(flip_group_flag(data, bit), "a", "tensor 'a'")


def _float_store():
    rng = np.random.default_rng(1)
    t = {"w": rng.normal(0, 0.02, (40, 24)).astype(np.float32)}
    return t, store.encode_store(t, opts=OPTS)


def _alter_plane(data: bytes, plane: int, offset: int, value: int) -> bytes:
    ver, index, body = open_container(data)
    ref = index["tensors"][0]["parts"][plane]
    blob = bytearray(body[ref["offset"] : ref["offset"] + ref["length"]])
    assert blob[:4] == b"JXRL" and blob[10] == 0  # a rANS-coded plane
    blob[offset] = value
    replace_blob(body, ref, reseal(bytes(blob)))
    return seal_container(ver, index, body)


def test_device_path_checks_raw_crc_of_layer_predictor():
    _, data = _float_store()
    _errors_on_both_paths(_alter_plane(data, 3, 11, 1), "w", "tensor 'w'")  # predictor none -> delta


# -- item 17: the index is cross-checked against the blobs --------------------------------------------


def _alter_entry(data: bytes, name: str, **changes) -> bytes:
    ver, index, body = open_container(data)
    e = next(e for e in index["tensors"] if e["name"] == name)
    e.update(changes)
    return seal_container(ver, index, body)


def test_flipped_per_channel_is_refused():
    rng = np.random.default_rng(2)
    data = store.encode_store({"w": rng.normal(0, 0.1, (12, 8)).astype(np.float32)}, mode="int8", opts=OPTS)
    _errors_on_both_paths(_alter_entry(data, "w", per_channel=False), "w", "scale")


@pytest.mark.parametrize("shape", [[20, 24], [24, 20, 2], [24, 4, 4], [480]])
def test_index_shape_must_match_the_blob(shape):
    _, data = _int8_store()
    _errors_on_both_paths(_alter_entry(data, "a", shape=shape), "a", "shape")


def test_int8_dtype_byte_in_a_float_plane_is_refused():
    _, data = _float_store()
    _errors_on_both_paths(_alter_plane(data, 3, 8, 1), "w", "plane")


# -- item 18: the CLI gives one error line, exit 2 ------------------------------------------------------


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxsys: error:") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "change",
    [
        dict(shape=[2**20, 2**20]),
        dict(shape=[-24, -20]),
        dict(shape=[24.0, 20]),
        dict(dtype="object"),
        dict(kind="q8"),
    ],
)
def test_cli_bad_index_entries(tmp_path, capsys, change):
    _, data = _int8_store()
    (tmp_path / "m.jxc").write_bytes(_alter_entry(data, "a", **change))
    _cli_error(capsys, ["codec", "decompress", str(tmp_path / "m.jxc"), str(tmp_path / "o.npz")])


def test_cli_fractional_offset_and_reshape_mismatch(tmp_path, capsys):
    _, data = _float_store()
    ver, index, body = open_container(data)
    index["tensors"][0]["parts"][0]["offset"] += 0.5
    (tmp_path / "f.jxc").write_bytes(seal_container(ver, index, body))
    _cli_error(capsys, ["codec", "decompress", str(tmp_path / "f.jxc"), str(tmp_path / "o.npz")])
    (tmp_path / "r.jxc").write_bytes(_alter_entry(data, "w", shape=[41, 24]))
    _cli_error(capsys, ["codec", "decompress", str(tmp_path / "r.jxc"), str(tmp_path / "o.npz")])


def test_cli_refuses_empty_and_pickled_inputs(tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    np.savez(tmp_path / "none.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", x=np.array([[1], "a"], dtype=object))
    for f in ("empty.npy", "none.npz", "obj.npy", "obj.npz"):
        _cli_error(capsys, ["codec", "compress", str(tmp_path / f), str(tmp_path / "o.jxc")])


def _huge_group_container(n_elements: int) -> bytes:
    """A container whose int8 group member claims `n_elements` (1-D) in the smallest structurally valid
    form: one single-symbol table, lanes of 65,533 symbols, each lane two words (its final state)."""
    from jaxsys.codec import group as G

    lane_syms = 65533
    n_lanes = -(-n_elements // lane_syms)
    freq = np.zeros(256, np.int64)
    freq[0] = 1 << 12
    table = pack_shared_table(freq)
    directory = b"".join(G.uleb(v) for v in (G.F_INT8 | G.F_1D, 1, n_elements, 1, lane_syms, 1))
    directory += struct.pack("<I", 0)
    index = np.full(n_lanes, 2, "<u2").tobytes()
    words = np.tile(np.array([0, 1], "<u2"), n_lanes).tobytes()
    hdr = GROUP_HDR.pack(
        b"JXRG", 2, 40, 1, 12, 0, len(table), len(directory), len(index), len(words), 2 * n_lanes, 0, 0
    )
    blob = reseal_group(hdr + table + directory + index + words)
    import zlib

    entry = {"name": "x", "dtype": "int8", "shape": [n_elements], "member": 0, "kind": "int", "parts": []}
    grp = {"offset": 0, "length": len(blob), "crc": zlib.crc32(blob), "members": ["x"]}
    return seal_container(2, {"version": 2, "tensors": [entry], "group": grp}, blob)


def test_cli_refuses_a_claimed_size_before_allocating(tmp_path, capsys, monkeypatch):
    data = _huge_group_container(2**31)
    assert len(data) < 200_000
    (tmp_path / "h.jxc").write_bytes(data)
    monkeypatch.setattr(store, "available_memory", lambda: 1 << 30)
    tracemalloc.start()
    try:
        err = _cli_error(capsys, ["codec", "decompress", str(tmp_path / "h.jxc"), str(tmp_path / "o.npz")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bytes" in err and peak < 64 << 20


def test_small_claimed_size_still_decodes():
    """The same construction at a size that fits: a legitimate constant tensor (only its CRC is wrong)."""
    st = store.Store(_huge_group_container(3 * 65533 + 5))
    with pytest.raises(CodecError, match="CRC"):
        st.decode("x")


# -- item 19 and the JSON limits -----------------------------------------------------------------------


def test_normalize_freqs_warns_nothing():
    rng = np.random.default_rng(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pb in (12, 16):
            for _ in range(20):
                c = np.zeros(256, np.int64)
                idx = rng.choice(256, rng.integers(1, 256), replace=False)
                c[idx] = rng.integers(1, 10 ** rng.integers(1, 7), len(idx))
                f = rans.normalize_freqs(c, pb)
                assert f.sum() == 1 << pb and np.all((f > 0) == (c > 0))
        rans.normalize_freqs(np.array([0] * 10 + [1] * 245 + [10**9]), 12)  # shrinks present symbols


def test_tokenizer_json_is_not_weights(tmp_path):
    tok = {"version": "1.0", "truncation": None, "model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "a": 1}}}
    (tmp_path / "tokenizer.json").write_text(__import__("json").dumps(tok))
    with pytest.raises(DataError, match="weights"):
        sources.load_tensors(tmp_path / "tokenizer.json")
    (tmp_path / "w.json").write_text('{"wte": [[0.5, 1.0], [2.0, 3.0]], "n": {"b": [1.0]}}')
    assert set(sources.load_tensors(tmp_path / "w.json")) == {"wte", "n/b"}


def test_bfloat16_int8_mode_decodes_as_bfloat16():
    w = np.random.default_rng(4).normal(0, 0.1, (16, 8)).astype(ml_dtypes.bfloat16)
    st = store.Store(store.encode_store({"w": w}, mode="int8", opts=OPTS))
    y = st.decode("w")
    assert y.dtype == w.dtype and np.abs(y.astype(np.float32) - w.astype(np.float32)).max() < 0.01
    assert np.asarray(st.decode_jax("w")).tobytes() == y.tobytes()


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = store.write_store(tmp_path / "m.jxc", {"a": np.ones((4, 4), np.int8)}, opts=OPTS)
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "index_bytes",
    [b"[" * 100_000 + b"]" * 100_000, b'{"version": 2, "tensors": [], "x": ' + b"9" * 5000 + b"}", b"NaN", b"\xff"],
)
def test_hostile_index_json(index_bytes):
    _, data = _int8_store()
    ver, _, body = open_container(data)
    with pytest.raises(CodecError, match="index"):
        store.Store(seal_container(ver, None, body, index_bytes=index_bytes))


def test_float_planes_in_the_wrong_order_are_refused():
    """Two valid uint8 plane blobs of the same shape, swapped in the index (found by the index fuzzer)."""
    _, data = _float_store()
    ver, index, body = open_container(data)
    index["tensors"][0]["parts"].reverse()
    _errors_on_both_paths(seal_container(ver, index, body), "w", "plane")
