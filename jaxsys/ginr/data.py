"""CIFAR-10 loading (no network) and a prefetching input pipeline.

Sources, all giving uint8 images [N, 32, 32, 3] and int32 labels [N]:
- the official python format: a folder `cifar-10-batches-py` (or the folder holding `data_batch_1..5`
  and `test_batch`);
- image files in class folders `<root>/<split>/<class>/*.{png,jpg}`, plain or inside a .tar.gz
  (`<root>/<split>.tar.gz` like ../shared/data/cifar10-jpeg, or a .tar.gz path given directly);
- the 20 lossless test PNGs packaged in jaxsys/data/cifar10-png20 (`load_png20`).

`Batches` yields training batches (images, random pixel coordinates and their RGB targets) from a
background thread; batch `s` depends only on (seed, s), so a resumed run sees the same data.
"""

import hashlib
import io
import os
import pickle
import queue
import tarfile
import threading
from pathlib import Path

import numpy as np

from jaxsys.errors import ConfigError, DataError, ShapeError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
PNG20_DIR = Path(__file__).resolve().parents[1] / "data" / "cifar10-png20"
SPLITS = ("train", "test")


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise DataError(f"cannot decode image {where}: {e}") from None


def _label(class_name: str, classes: list[str]) -> int:
    return CLASSES.index(class_name) if class_name in CLASSES else classes.index(class_name)


def _stack(images: list[np.ndarray], labels: list[int], where: str) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        raise DataError(f"no images found in {where}")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ShapeError(f"images in {where} have different shapes {sorted(shapes)[:4]}")
    return np.stack(images), np.asarray(labels, np.int32)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (dicts, lists, strings, numbers and numpy arrays):
    a pickle that names any other callable is refused instead of run."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refuses to load {module}.{name} (not part of a CIFAR-10 batch)")
        return super().find_class(module, name)


def _field(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One `cifar-10-batches-py` pickle -> uint8 images [N, 32, 32, 3] and int32 labels [N].

    The format: a dict with `data` [N, 3072] (each row the R, G and B planes of a 32x32 image, row
    major) and `labels` (N ints). Pixels must be whole numbers 0..255 in any numeric dtype; float
    pixels in [0, 1] are refused rather than guessed at (scaling by 255 or not cannot be told apart
    for a dark image). Any other content (rows of another length, a truncated file, a count of labels
    that differs from the count of rows, a pickle that names a non-numpy callable) is a DataError.
    """
    f = Path(path)
    try:
        with open(f, "rb") as fh:
            d = _BatchUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{f}: cannot read the pickle ({e})") from None
    except Exception as e:  # unreadable, truncated or corrupt files fail in many ways (EOF, overflow, codecs)
        raise DataError(f"{f}: cannot read the pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{f}: not a CIFAR-10 batch (a {type(d).__name__}, expected a dict with data and labels)")
    try:
        data, labels = _field(d, "data"), _field(d, "labels")
    except KeyError as e:
        raise DataError(f"{f}: not a CIFAR-10 batch (missing key {e})") from None
    try:
        data = np.asarray(data)
        labels = np.asarray(labels)
    except Exception as e:
        raise DataError(f"{f}: data or labels are not arrays ({type(e).__name__}: {e})") from None
    if data.ndim != 2:
        raise DataError(f"{f}: expected a 2-d data array [N, 3072], got shape {data.shape}")
    if data.shape[1] != 3072:
        raise DataError(
            f"{f}: rows of {data.shape[1]} values; a CIFAR-10 row holds 3072 (32 x 32 pixels x 3 colour planes)"
        )
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{f}: {labels.size} labels for {len(data)} images")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) or (
        len(labels) and (labels.min() < 0 or labels.max() >= 2**31)
    ):
        raise DataError(f"{f}: labels must be integers >= 0, got {labels.dtype} values {labels[:4].tolist()}")
    if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise DataError(f"{f}: pixels must be numbers 0..255, got dtype {data.dtype}")
    if data.size and data.dtype != np.uint8:
        lo, hi = data.min(), data.max()
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
            raise DataError(f"{f}: pixel values outside 0..255 (range [{lo}, {hi}])")
        if np.issubdtype(data.dtype, np.floating) and not np.all(data == np.round(data)):
            if hi <= 1:
                raise DataError(
                    f"{f}: float pixels in [0, 1]; the CIFAR-10 python format holds whole numbers 0..255 "
                    f"(multiply by 255 and round)"
                )
            raise DataError(f"{f}: pixels must be whole numbers 0..255, got fractional {data.dtype} values")
    x = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, labels.astype(np.int32)


def load_cifar_python(
    folder: str | os.PathLike, split: str = "train", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The official `cifar-10-batches-py` pickles (`read_cifar_batch` each): data_batch_1..5 for
    train, test_batch for test."""
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        f = folder / n
        if not f.is_file():
            raise DataError(f"CIFAR-10 python batch missing: {f}")
        x, y = read_cifar_batch(f)
        xs.append(x)
        ys.append(y)
        if limit is not None and sum(len(x) for x in xs) >= limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not len(x):
        raise DataError(f"no images in the CIFAR-10 batches of {folder}")
    return (x[:limit], y[:limit]) if limit is not None else (x, y)


def load_image_folder(folder: str | os.PathLike, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images in `<folder>/<class>/*`; labels by CIFAR-10 class name (else sorted folder order)."""
    folder = Path(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{folder}: expected one sub-folder per class, found none")
    images, labels = [], []
    for c in classes:
        for f in sorted((folder / c).iterdir()):
            if f.suffix.lower() in IMAGE_EXTS:
                images.append(_decode(f.read_bytes(), str(f)))
                labels.append(_label(c, classes))
                if limit is not None and len(images) >= limit:
                    return _stack(images, labels, str(folder))
    return _stack(images, labels, str(folder))


def load_image_tar(path: str | os.PathLike, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images in a (gzipped) tar laid out as `.../<class>/<file>`; streams members and stops after
    `limit` images (so a test reads only the first few)."""
    path = Path(path)
    images, names = [], []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile() or Path(m.name).suffix.lower() not in IMAGE_EXTS:
                    continue
                parts = Path(m.name).parts
                if len(parts) < 2:
                    raise DataError(f"{path}: member {m.name} is not inside a class folder")
                images.append(_decode(tf.extractfile(m).read(), f"{path}:{m.name}"))
                names.append(parts[-2])
                if limit is not None and len(images) >= limit:
                    break
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot read archive {path}: {e}") from None
    classes = sorted(set(names))
    return _stack(images, [_label(n, classes) for n in names], str(path))


def _resolve(path: Path, split: str):
    """(kind, location) for a dataset path and split."""
    if not path.exists():
        raise DataError(f"dataset path not found: {path}")
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return "tar", path
        raise DataError(f"{path}: expected a folder or a .tar.gz archive of class folders")
    if (path / "cifar-10-batches-py").is_dir():
        return "python", path / "cifar-10-batches-py"
    if (path / "data_batch_1").is_file() or (path / "test_batch").is_file():
        return "python", path
    for ext in (".tar.gz", ".tgz", ".tar"):
        if (path / f"{split}{ext}").is_file():
            return "tar", path / f"{split}{ext}"
    if (path / split).is_dir():
        return "folder", path / split
    if any(d.is_dir() for d in path.iterdir()):
        return "folder", path
    raise DataError(
        f"{path}: no CIFAR-10 data for split {split!r} (expected cifar-10-batches-py, "
        f"{split}.tar.gz, a {split}/ folder or class folders)"
    )


def load_cifar10(
    path: str | os.PathLike, split: str = "train", limit: int | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images [N, 32, 32, 3] uint8 and labels [N] from any supported layout (module docstring).

    cache_dir: if given, decoded arrays are kept there as .npy files keyed by the source path, size,
    mtime, split and limit (decoding 50,000 JPEGs takes a while).
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be positive, got {limit}")
    kind, loc = _resolve(Path(path), split)
    cache = None
    if cache_dir is not None:
        st = loc.stat()
        key = hashlib.sha1(f"{loc.resolve()}|{st.st_size}|{st.st_mtime_ns}|{split}|{limit}".encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"cifar10-{split}-{key}"
        if (cache.with_suffix(".x.npy")).is_file() and (cache.with_suffix(".y.npy")).is_file():
            return np.load(cache.with_suffix(".x.npy")), np.load(cache.with_suffix(".y.npy"))
    if kind == "python":
        x, y = load_cifar_python(loc, split, limit)
    elif kind == "tar":
        x, y = load_image_tar(loc, limit)
    else:
        x, y = load_image_folder(loc, limit)
    if cache is not None:
        from jaxsys.train.io import atomic_write_bytes

        for suffix, arr in ((".x.npy", x), (".y.npy", y)):
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(cache.with_suffix(suffix), buf.getvalue())
    return x, y


def load_png20() -> tuple[np.ndarray, np.ndarray]:
    """The 20 lossless CIFAR-10 test images shipped with the package (file name cifar10_II_L.png)."""
    if not PNG20_DIR.is_dir():
        raise DataError(f"packaged images missing: {PNG20_DIR}")
    files = sorted(PNG20_DIR.glob("cifar10_*.png"))
    if not files:
        raise DataError(f"no cifar10_*.png files in {PNG20_DIR}")
    x = np.stack([_decode(f.read_bytes(), str(f)) for f in files])
    y = np.asarray([int(f.stem.split("_")[-1]) for f in files], np.int32)
    return x, y


def load_image_files(paths, size: int = 32) -> np.ndarray:
    """RGB uint8 [N, size, size, 3] from image files (PNG, JPEG, ...), e.g. a user's own images to
    reconstruct; every file must already be size x size (no resizing: the model was trained on that
    grid)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no image files given")
    out = []
    for p in paths:
        if not p.is_file():
            raise DataError(f"image file not found: {p}")
        im = _decode(p.read_bytes(), str(p))
        if im.shape != (size, size, 3):
            raise ShapeError(f"{p}: image is {im.shape[1]}x{im.shape[0]}, the model works on {size}x{size} images")
        out.append(im)
    return np.stack(out)


# ---------------------------------------------------------------- input pipeline
def pixel_centres(size: int) -> np.ndarray:
    """(y, x) pixel centres in [-1, 1], row-major [size * size, 2] (numpy twin of model.pixel_grid)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([yy, xx], -1).reshape(-1, 2)


def make_batch(
    images_u8: np.ndarray, idx: np.ndarray, num_coords: int, rng: np.random.Generator, coord_jitter: float = 0.0
) -> dict[str, np.ndarray]:
    """images [B, S, S, 3] float32 in [0, 1], coords [B, K, 2] and targets [B, K, 3] at K random pixels
    per image (all S*S pixels in row-major order when num_coords is 0 or >= S*S).

    coord_jitter (pixels, in [0, 0.5]): each coordinate moves uniformly within +-coord_jitter pixels of
    its pixel centre, per axis, and keeps that pixel's colour, so training also fits the network between
    pixel centres (a box-filtered image); 0.5 covers the whole pixel. The jitter is drawn from `rng`
    after the pixel sample, so coord_jitter 0 gives the same batches as before it existed."""
    check_coord_jitter(coord_jitter)
    imgs = images_u8[idx].astype(np.float32) / 255.0
    B, S = imgs.shape[0], imgs.shape[1]
    P = S * S
    grid = pixel_centres(S)
    flat = imgs.reshape(B, P, 3)
    if num_coords <= 0 or num_coords >= P:
        coords, targets = np.broadcast_to(grid, (B, P, 2)).copy(), flat
    else:
        pix = np.argsort(rng.random((B, P)), axis=1)[:, :num_coords]
        coords, targets = grid[pix], np.take_along_axis(flat, pix[..., None], 1)
    if coord_jitter:
        shift = rng.uniform(-coord_jitter, coord_jitter, coords.shape).astype(np.float32) * np.float32(2.0 / S)
        coords = np.clip(coords + shift, -1.0, 1.0)
    return {"images": imgs, "coords": coords, "targets": targets}


def check_coord_jitter(coord_jitter: float) -> None:
    if not (isinstance(coord_jitter, int | float) and 0.0 <= coord_jitter <= 0.5):
        raise ConfigError(
            f"coord_jitter must be a number of pixels in [0, 0.5] (0.5 = anywhere in the pixel), got {coord_jitter!r}"
        )


class Batches:
    """Iterator over training batches for steps start, start + 1, ...; a background thread prepares
    up to `prefetch` batches ahead while the accelerator runs the step.

    Epoch e visits the images in the order permutation(seed, e); batch s is the (s mod n_per_epoch)-th
    slice of epoch s // n_per_epoch (the last partial batch of an epoch is dropped), and its pixel
    sample uses the generator seeded by (seed, s).
    """

    def __init__(
        self,
        images_u8: np.ndarray,
        batch_size: int,
        num_coords: int,
        seed: int = 0,
        start: int = 0,
        prefetch: int = 4,
        coord_jitter: float = 0.0,
    ):
        if images_u8.ndim != 4:
            raise ShapeError(f"Batches: images must be [N, S, S, C], got {images_u8.shape}")
        if batch_size <= 0 or batch_size > len(images_u8):
            raise DataError(f"Batches: batch_size {batch_size} must be in [1, {len(images_u8)}]")
        check_coord_jitter(coord_jitter)
        self.images, self.batch_size, self.num_coords, self.seed = images_u8, batch_size, num_coords, seed
        self.coord_jitter = coord_jitter
        self.per_epoch = len(images_u8) // batch_size
        self.step = start
        self._q: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(start,), daemon=True)
        self._thread.start()

    def batch(self, step: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(step, self.per_epoch)
        perm = np.random.default_rng((self.seed, epoch)).permutation(len(self.images))
        idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, 1, step))
        return make_batch(self.images, idx, self.num_coords, rng, self.coord_jitter)

    def _work(self, step: int) -> None:
        try:
            while not self._stop.is_set():
                item = (step, self.batch(step))
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                step += 1
        except BaseException as e:  # surfaced in the consumer
            self._q.put((None, e))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        step, item = self._q.get()
        if step is None:
            raise item
        self.step = step + 1
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
