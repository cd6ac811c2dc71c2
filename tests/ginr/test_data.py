"""CIFAR-10 loaders (shared JPEG tar, python pickles, class folders, packaged PNGs) and the pipeline."""

import pickle

import numpy as np
import pytest
from PIL import Image

from jaxsys.errors import ConfigError, DataError, ShapeError
from jaxsys.ginr import data as gd


def test_shared_jpeg_tar_first_members(shared_data):
    x, y = gd.load_cifar10(shared_data / "cifar10-jpeg", "test", limit=12)
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert list(y) == [0] * 12  # the archive starts with test/airplane/
    assert 20 < x.mean() < 235 and x.std() > 10
    x2, _ = gd.load_image_tar(shared_data / "cifar10-jpeg" / "train.tar.gz", limit=3)
    assert x2.shape == (3, 32, 32, 3)


def test_png20_packaged_equals_shared(shared_data):
    x, y = gd.load_png20()
    assert x.shape == (20, 32, 32, 3)
    assert list(y[:4]) == [3, 8, 8, 0]
    ref = np.asarray(Image.open(shared_data / "cifar10-png20" / "cifar10_05_6.png").convert("RGB"))
    np.testing.assert_array_equal(x[5], ref)
    assert (gd.PNG20_DIR / "LICENSE.md").is_file()


def test_python_pickle_format(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    r = np.random.default_rng(0)
    planes = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = r.integers(0, 256, (3, 3072), dtype=np.uint8)
        planes[name] = data
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [1, 2, 3]}, f)
    x, y = gd.load_cifar10(tmp_path, "train")
    assert x.shape == (15, 32, 32, 3) and list(y[:3]) == [1, 2, 3]
    d = planes["data_batch_1"]
    # pixel (row 2, col 5) of image 1: R at 2*32+5, G at 1024 + ..., B at 2048 + ...
    assert list(x[1, 2, 5]) == [d[1, 69], d[1, 1024 + 69], d[1, 2048 + 69]]
    xt, _ = gd.load_cifar10(root, "test")
    assert xt.shape == (3, 32, 32, 3)


def test_class_folders_and_tar(tmp_path):
    import tarfile

    for split in ("train", "test"):
        for c in ("cat", "ship"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((32, 32, 3), 40 * i + (100 if c == "ship" else 0), np.uint8)).save(
                    tmp_path / split / c / f"{i}.png"
                )
    x, y = gd.load_cifar10(tmp_path, "train")
    assert x.shape == (4, 32, 32, 3) and sorted(y) == [3, 3, 8, 8]
    with tarfile.open(tmp_path / "arch.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "test", arcname="test")
    xa, ya = gd.load_cifar10(tmp_path / "arch.tar.gz", "test")
    assert xa.shape == (4, 32, 32, 3) and sorted(ya) == [3, 3, 8, 8]
    xc, _ = gd.load_cifar10(tmp_path, "test", cache_dir=tmp_path / "cache")
    xc2, _ = gd.load_cifar10(tmp_path, "test", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(xc, xc2)


def test_missing_and_bad_paths(tmp_path):
    with pytest.raises(DataError, match="not found"):
        gd.load_cifar10(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 data"):
        gd.load_cifar10(tmp_path / "empty", "train")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(DataError, match="cannot read archive"):
        gd.load_cifar10(bad, "train")
    with pytest.raises(DataError, match="split"):
        gd.load_cifar10(tmp_path, "valid")


def test_batches_deterministic_and_targets_match_pixels():
    x, _ = gd.load_png20()
    with gd.Batches(x, 4, 16, seed=3) as a, gd.Batches(x, 4, 16, seed=3, start=2) as b:
        ba = [next(a) for _ in range(3)]
        bb = next(b)
    np.testing.assert_array_equal(ba[2]["coords"], bb["coords"])
    np.testing.assert_array_equal(ba[2]["images"], bb["images"])
    bt = ba[0]
    # independent read-back: coordinate -> pixel index -> value in the image
    ij = np.round((bt["coords"] + 1) / 2 * 32 - 0.5).astype(int)
    for n in range(4):
        np.testing.assert_allclose(bt["targets"][n], bt["images"][n][ij[n, :, 0], ij[n, :, 1]])
    full = gd.make_batch(x, np.arange(2), 0, np.random.default_rng(0))
    assert full["coords"].shape == (2, 1024, 2) and np.abs(full["coords"]).max() < 1
    with pytest.raises(DataError, match="batch_size"):
        gd.Batches(x, 50, 16)
    with pytest.raises(ShapeError):
        gd.Batches(x[0], 2, 16)


@pytest.mark.parametrize("num_coords", [16, 0])
def test_coord_jitter_stays_in_its_pixel_and_keeps_the_sample(num_coords):
    x, _ = gd.load_png20()
    idx = np.arange(3)
    plain = gd.make_batch(x, idx, num_coords, np.random.default_rng(5))
    jit = gd.make_batch(x, idx, num_coords, np.random.default_rng(5), coord_jitter=0.5)
    # same pixels and targets as without jitter (the jitter is drawn after the sample) ...
    np.testing.assert_array_equal(jit["targets"], plain["targets"])
    np.testing.assert_array_equal(jit["images"], plain["images"])
    # ... each coordinate inside its own pixel's box, at most 0.5 px (1/32 in [-1, 1]) from its centre
    off_px = (jit["coords"] - plain["coords"]) * 32 / 2
    assert np.abs(off_px).max() <= 0.5 + 1e-5
    assert np.abs(off_px).max() > 0.4 and abs(off_px.mean()) < 0.15  # it moves, no bias (5 sigma at 96 draws)
    ij = np.floor((jit["coords"] + 1) / 2 * 32).clip(0, 31).astype(int)
    for n in range(3):
        np.testing.assert_allclose(jit["targets"][n], jit["images"][n][ij[n, :, 0], ij[n, :, 1]])
    assert np.abs(jit["coords"]).max() <= 1.0
    small = gd.make_batch(x, idx, num_coords, np.random.default_rng(5), coord_jitter=0.1)
    assert np.abs((small["coords"] - plain["coords"]) * 16).max() <= 0.1 + 1e-5
    # Batches: deterministic in (seed, step) with jitter too
    with (
        gd.Batches(x, 4, 16, seed=3, coord_jitter=0.5) as a,
        gd.Batches(x, 4, 16, seed=3, start=1, coord_jitter=0.5) as b,
    ):
        next(a)
        np.testing.assert_array_equal(next(a)["coords"], next(b)["coords"])


@pytest.mark.parametrize("bad", [-0.1, 0.6, float("nan"), "0.5"])
def test_coord_jitter_out_of_range(bad):
    x, _ = gd.load_png20()
    with pytest.raises(ConfigError, match="coord_jitter"):
        gd.make_batch(x, np.arange(2), 8, np.random.default_rng(0), coord_jitter=bad)
    with pytest.raises(ConfigError, match="coord_jitter"):
        gd.Batches(x, 2, 8, coord_jitter=bad)


def _write_batches(root, data, labels, names=None):
    root.mkdir(parents=True, exist_ok=True)
    for name in names or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)


@pytest.mark.parametrize(
    "data,labels,msg",
    [
        (np.zeros((4, 3000), np.uint8), [0] * 4, "rows of 3000 values; a CIFAR-10 row holds 3072"),
        # 28x28x3 = 2352 values a row: 4 rows reshape into 3 scrambled 32x32 images with 4 labels
        (np.zeros((4, 2352), np.uint8), [0] * 4, "rows of 2352 values"),
        (np.zeros((2, 3072), np.uint8), [0, 1, 2], "3 labels for 2 images"),
        (np.full((2, 3072), 0.5, np.float32), [0, 1], "float pixels in \\[0, 1\\]"),
        (np.full((2, 3072), 300, np.int32), [0, 1], "outside 0..255"),
        (np.zeros((2, 3072), np.uint8), [0, -1], "labels must be integers"),
        (np.zeros(3072, np.uint8), [0], "expected a 2-d"),
    ],
)
def test_python_pickle_bad_batches(tmp_path, data, labels, msg):
    _write_batches(tmp_path / "cifar-10-batches-py", data, labels)
    with pytest.raises(DataError, match=msg):
        gd.load_cifar10(tmp_path, "train")


def test_python_pickle_truncated_and_not_a_batch(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    _write_batches(root, np.zeros((2, 3072), np.uint8), [0, 1])
    whole = (root / "test_batch").read_bytes()
    (root / "test_batch").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="test_batch: cannot read the pickle"):
        gd.load_cifar10(tmp_path, "test")
    with open(root / "test_batch", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        gd.load_cifar10(tmp_path, "test")
    # a pickle that would call a function on load is refused, not run
    (root / "test_batch").write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(DataError, match="refuses"):
        gd.load_cifar10(tmp_path, "test")


def test_python_pickle_float_pixels_that_are_whole_numbers_load(tmp_path):
    """Float pixels holding whole numbers 0..255 are unambiguous: they load as those values."""
    data = np.random.default_rng(0).integers(0, 256, (2, 3072)).astype(np.float64)
    _write_batches(tmp_path / "cifar-10-batches-py", data, [0, 1], names=["test_batch"])
    x, _ = gd.load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(x.transpose(0, 3, 1, 2).reshape(2, 3072), data.astype(np.uint8))
