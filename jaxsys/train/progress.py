"""Progress of long loops: `for i in Progress(range(n), desc="train")`, `bar.set(loss=0.1)` to show
live values.

On a terminal it is a tqdm bar. On a pipe or a log file it prints one plain line every
`interval_non_tty` seconds instead (tqdm's carriage-return redraws would fill a log with partial
lines). A closed or broken output (`... | tee log` after Ctrl-C, a reader that went away) switches the
bar off instead of raising: progress output must never stop training or the checkpoint that follows.
"""

import sys
import time
from collections.abc import Iterable

from tqdm import tqdm


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "item"):
        return _fmt(v.item())
    return str(v)


class Progress:
    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        interval: float = 0.2,
        interval_non_tty: float = 10.0,
        file=None,
        disable: bool = False,
        initial: int = 0,
    ):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.file = file or sys.stderr
        try:
            self.tty = bool(self.file.isatty())
        except (AttributeError, OSError, ValueError):
            self.tty = False
        self.interval = interval if self.tty else interval_non_tty
        self.disable = disable
        self.n = initial
        self.values: dict = {}
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._bar = None
        self._closed = False
        if self.tty and not disable:
            self._guard(self._open_tqdm)

    def _open_tqdm(self) -> None:
        self._bar = tqdm(
            total=self.total,
            initial=self.n,
            desc=self.desc,
            file=self.file,
            mininterval=self.interval,
            dynamic_ncols=True,
        )

    def set(self, **values) -> None:
        self.values.update(values)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.disable:
            return
        if self._bar is not None:
            self._guard(lambda: self._tqdm_update(k))
            return
        if self.tty:
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw()

    def _tqdm_update(self, k: int) -> None:
        if self.values:
            self._bar.set_postfix({key: _fmt(v) for key, v in self.values.items()}, refresh=False)
        self._bar.update(k)

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        rate = self.n / el if el > 0 else 0.0
        vals = " ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            eta = (self.total - self.n) / rate if rate > 0 else float("nan")
            return f"{self.desc} [{bar}] {self.n}/{self.total} {rate:.1f}it/s {el:.0f}s<{eta:.0f}s {vals}"
        return f"{self.desc} {self.n} {rate:.1f}it/s {el:.0f}s {vals}"

    def _guard(self, write) -> None:
        """Run a write; a closed or broken output turns the bar off for good."""
        try:
            write()
        except (OSError, ValueError):  # BrokenPipeError, EPIPE/EIO, "I/O operation on closed file"
            self.disable = True

    def _draw(self) -> None:
        if self.disable:
            return

        def write():
            self.file.write(self.line() + "\n")
            self.file.flush()

        self._guard(write)

    def close(self) -> None:
        """The final line (or the tqdm bar's last redraw); a second close draws nothing."""
        if self._closed:
            return
        self._closed = True
        if self.disable:
            if self._bar is not None:
                self._bar.disable = True  # never touch a broken stream again, not even at exit
            return
        if self._bar is not None:
            self._guard(lambda: (self._tqdm_update(0), self._bar.close()))
        else:
            self._draw()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
