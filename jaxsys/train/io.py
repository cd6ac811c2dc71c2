"""Atomic file writes (temp file in the same folder, fsync, rename), run directories, and bounded JSON
reading for every model/metadata/index file the library accepts from outside."""

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from jaxsys.errors import DataError

# Bounds of `load_json`: big enough for every file the library writes, small enough that a hostile
# file fails fast with a message instead of a traceback, a hang or an out-of-memory.
JSON_MAX_BYTES = 1 << 30  # 1 GiB of text
JSON_MAX_DEPTH = 64  # nesting of lists/objects
JSON_MAX_NUMBER_CHARS = 64  # digits of one number literal (float64 needs 25)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file follows the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically as PNG (rendered to memory, then renamed into place)."""
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def make_run_dir(root: str | os.PathLike = "runs", name: str = "run") -> Path:
    """A fresh directory `root/name-YYYYmmdd-HHMMSS[-n]`."""
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        d = root / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a fresh run directory under {root}")


def _max_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (a linear scan; no recursion)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _number(limit: int, where: str, kind):
    def parse(s: str):
        if len(s) > limit:
            raise DataError(f"{where}: a number literal of {len(s)} characters (at most {limit}): {s[:20]}...")
        return kind(s)

    return parse


def load_json(
    source: str | bytes | os.PathLike,
    what: str,
    *,
    max_bytes: int = JSON_MAX_BYTES,
    max_depth: int = JSON_MAX_DEPTH,
    max_number_chars: int = JSON_MAX_NUMBER_CHARS,
) -> Any:
    """Parse JSON from a file (a Path) or from text (str/bytes) within bounds, raising DataError naming
    `what` for anything
    that is not valid, bounded JSON: too large, nested deeper than `max_depth`, a number literal longer
    than `max_number_chars`, NaN/Infinity, invalid UTF-8 or syntax. Never a RecursionError or a
    5,000-digit int."""
    if isinstance(source, (str, bytes)):
        data = source
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise DataError(f"{what}: cannot read {path}: {e.strerror or e}") from None
        if size > max_bytes:
            raise DataError(f"{what}: {path} is {size} bytes (at most {max_bytes})")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise DataError(f"{what}: {len(data)} bytes of JSON (at most {max_bytes})")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{what}: not UTF-8 text (byte {e.start})") from None
    depth = _max_depth(data)
    if depth > max_depth:
        raise DataError(f"{what}: JSON nested {depth} deep (at most {max_depth})")

    def bad_constant(name: str):
        raise DataError(f"{what}: {name} is not valid JSON")

    try:
        return json.loads(
            data,
            parse_int=_number(max_number_chars, what, int),
            parse_float=_number(max_number_chars, what, float),
            parse_constant=bad_constant,
        )
    except json.JSONDecodeError as e:
        raise DataError(f"{what}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DataError(f"{what}: JSON nested too deep") from None
