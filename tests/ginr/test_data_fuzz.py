"""Property-based fuzzing of the image loaders (hypothesis): every input either loads correctly or
raises a JaxsysError, never another exception. Example counts are bounded (stated per test) so the
module runs in a few seconds."""

import io
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from jaxsys.errors import JaxsysError
from jaxsys.ginr import data as gd

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

DTYPES = [np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_]


@st.composite
def pixel_arrays(draw):
    rows = draw(st.integers(0, 3))
    cols = draw(st.sampled_from([3072, 3072, 2352, 1024, 0, 3073]))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["bytes", "unit", "wide", "nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "bytes":
        a = rng.integers(0, 256, (rows, cols))
    elif kind == "unit":
        a = rng.random((rows, cols))
    elif kind == "wide":
        a = rng.integers(-300, 300, (rows, cols))
    else:
        a = np.full((rows, cols), np.nan)
    with np.errstate(invalid="ignore"):
        a = a.astype(dtype)
    return a if draw(st.booleans()) else a.reshape(-1)[: draw(st.integers(0, a.size))]


labels = st.one_of(
    st.lists(st.integers(-2, 12), max_size=4),
    st.lists(st.floats(allow_nan=True), max_size=4),
    st.lists(st.text(max_size=2), max_size=2),
    st.none(),
)


@st.composite
def batch_files(draw):
    """Bytes of a cifar-10-batches-py file: a (possibly broken) batch dict, or corrupted bytes."""
    d = {}
    if draw(st.booleans()):
        d[b"data"] = draw(pixel_arrays())
    if draw(st.booleans()) or not d:
        d[draw(st.sampled_from([b"labels", "labels", b"fine_labels"]))] = draw(labels)
    obj = d if draw(st.integers(0, 5)) else draw(st.sampled_from([[1, 2], "text", 3.5, None]))
    raw = pickle.dumps(obj, protocol=draw(st.integers(2, 5)))
    cut = draw(st.sampled_from(["whole", "truncated", "flipped", "garbage"]))
    if cut == "truncated":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif cut == "flipped" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif cut == "garbage":
        raw = draw(st.binary(max_size=64))
    return raw


def _check_loaded(x, y):
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (32, 32, 3)
    assert y.dtype == np.int32 and y.shape == (len(x),) and (y >= 0).all()


@settings(max_examples=150, **SETTINGS)  # 150 batches, each written and read once (~4 s)
@given(raw=batch_files())
def test_fuzz_cifar_python_batch(raw):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "cifar-10-batches-py"
        root.mkdir()
        (root / "test_batch").write_bytes(raw)
        try:
            x, y = gd.load_cifar10(d, "test")
        except JaxsysError:
            return
        _check_loaded(x, y)
        # what loaded is the pickle's own pixels, R/G/B planes of each row
        data = np.asarray(pickle.loads(raw)[b"data"])
        np.testing.assert_array_equal(x.transpose(0, 3, 1, 2).reshape(len(x), -1), data.astype(np.uint8))


@st.composite
def image_files(draw):
    """(class folder, file name, bytes): a valid image of random size/mode, or broken bytes."""
    cls = draw(st.sampled_from(["cat", "ship", "zz_other"]))
    ext = draw(st.sampled_from([".png", ".jpg", ".bmp", ".txt"]))
    kind = draw(st.sampled_from(["image", "image", "truncated", "garbage", "empty"]))
    if kind == "image":
        size = draw(st.sampled_from([32, 32, 16, 1]))
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16"]))
        buf = io.BytesIO()
        fmt = {".jpg": "JPEG", ".bmp": "BMP"}.get(ext, "PNG")
        im = Image.new(mode, (size, size), color=draw(st.integers(0, 255)))
        if fmt == "JPEG" and mode not in ("RGB", "L"):
            im = im.convert("RGB")
        if fmt == "BMP" and mode == "I;16":
            im = im.convert("L")
        im.save(buf, format=fmt)
        data = buf.getvalue()
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.new("RGB", (32, 32)).save(buf, format="PNG")
        data = buf.getvalue()[: draw(st.integers(0, 60))]
    elif kind == "garbage":
        data = draw(st.binary(max_size=40))
    else:
        data = b""
    return cls, f"{draw(st.integers(0, 9))}{ext}", data


def _check_images(x, y):
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] == 3 and len(x) >= 1
    assert y.dtype == np.int32 and y.shape == (len(x),)


@settings(max_examples=40, **SETTINGS)  # 40 folders of up to 4 files (~3 s)
@given(files=st.lists(image_files(), max_size=4))
def test_fuzz_class_folders(files):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "test"
        root.mkdir()
        for cls, name, data in files:
            (root / cls).mkdir(exist_ok=True)
            (root / cls / name).write_bytes(data)
        try:
            x, y = gd.load_cifar10(d, "test")
        except JaxsysError:
            return
        _check_images(x, y)


@settings(max_examples=40, **SETTINGS)  # 40 archives of up to 4 members (~3 s)
@given(
    files=st.lists(image_files(), max_size=4),
    damage=st.sampled_from(["none", "none", "truncated", "garbage"]),
    cut=st.integers(0, 400),
)
def test_fuzz_tar_archives(files, damage, cut):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for cls, name, data in files:
            info = tarfile.TarInfo(f"test/{cls}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if damage == "truncated":
        raw = raw[: min(cut, len(raw) - 1)]
    elif damage == "garbage":
        raw = raw[:10] + bytes(range(cut % 200))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "test.tar.gz").write_bytes(raw)
        try:
            x, y = gd.load_cifar10(d, "test")
        except JaxsysError:
            return
        _check_images(x, y)
