"""A dependency-free progress bar for long loops: `for i in Progress(range(n), desc="train")`,
`bar.set(loss=0.1)` to show live values. Redraws at most every `interval` seconds; on a non-TTY
(CI, pipes) it prints a line every `interval_non_tty` seconds instead."""

import sys
import time
from collections.abc import Iterable


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
        self.tty = hasattr(self.file, "isatty") and self.file.isatty()
        self.interval = interval if self.tty else interval_non_tty
        self.disable = disable
        self.n = initial
        self.values: dict = {}
        self.t0 = time.perf_counter()
        self._last = 0.0

    def set(self, **values) -> None:
        self.values.update(values)

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw()

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

    def _draw(self) -> None:
        if self.disable:
            return
        if self.tty:
            self.file.write("\r" + self.line()[:160].ljust(160))
        else:
            self.file.write(self.line() + "\n")
        self.file.flush()

    def close(self) -> None:
        if not self.disable:
            self._draw()
            if self.tty:
                self.file.write("\n")
            self.file.flush()

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
