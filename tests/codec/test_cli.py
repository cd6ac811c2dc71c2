import numpy as np

from jaxsys.cli import main
from jaxsys.codec import sources


def test_compress_info_decompress_npy(tmp_path, capsys):
    x = np.clip(np.rint(np.random.default_rng(0).normal(0, 8, (64, 48))), -127, 127).astype(np.int8)
    np.save(tmp_path / "w.npy", x)
    assert (
        main(["codec", "compress", str(tmp_path / "w.npy"), str(tmp_path / "w.jxc"), "--tile", "32", "--lanes", "8"])
        == 0
    )
    assert main(["codec", "info", str(tmp_path / "w.jxc")]) == 0
    out = capsys.readouterr().out
    assert "rans/none" in out and "total:" in out
    assert main(["codec", "decompress", str(tmp_path / "w.jxc"), str(tmp_path / "o.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "o.npy"), x)


def test_safetensors_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    t = {"a": rng.normal(0, 1, (8, 8)).astype(np.float32), "b": rng.integers(-5, 5, (10,)).astype(np.int8)}
    sources.write_safetensors(tmp_path / "m.safetensors", t)
    assert main(["codec", "compress", str(tmp_path / "m.safetensors"), str(tmp_path / "m.jxc")]) == 0
    assert main(["codec", "decompress", str(tmp_path / "m.jxc"), str(tmp_path / "o.safetensors")]) == 0
    back = sources.read_safetensors(tmp_path / "o.safetensors")
    assert all(np.array_equal(back[k], t[k]) for k in t)


def test_bench_and_errors(tmp_path, capsys):
    assert main(["codec", "bench", "--size", "128", "--tile", "64", "--repeats", "1"]) == 0
    assert "decode_jax_MBps" in capsys.readouterr().out
    assert main(["codec", "info", str(tmp_path / "nope.jxc")]) == 2
    (tmp_path / "bad.jxc").write_bytes(b"garbage" * 10)
    assert main(["codec", "info", str(tmp_path / "bad.jxc")]) == 2
