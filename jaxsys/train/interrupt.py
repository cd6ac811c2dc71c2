"""Ctrl-C that never costs the last completed training step, and output that never stops training.

    ctrl_c = StopOnCtrlC()
    with ctrl_c:
        while step < steps and not ctrl_c.requested:
            state = train_step(state, ...)      # never cut off mid-dispatch by the first Ctrl-C
    if ctrl_c.requested:
        save(state); log("interrupted: ..."); raise KeyboardInterrupt

`never_raises(print)` swallows OSError (`train.progress.Progress` guards its own writes): a closed stdout/stderr
(`... | tee log` after Ctrl-C, a reader that went away) must not stop training or the save.
"""

import signal
import threading
from collections.abc import Callable


class StopOnCtrlC:
    """While active (main thread, one process, Python's default SIGINT handler): the first Ctrl-C only
    sets `requested`, so the loop finishes the step in flight, saves it and stops; a second Ctrl-C
    raises KeyboardInterrupt at once. A step is never cut off mid-dispatch, so the last completed
    state is always whole (its buffers were not yet donated to a step that never returned)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.requested, self._prev = enabled, False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        main = threading.current_thread() is threading.main_thread()
        if self.enabled and main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._prev = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)


def never_raises(fn: Callable) -> Callable:
    """`fn` with OSError swallowed: a closed stdout/stderr (`... | tee log` after Ctrl-C, a reader
    that went away) must not stop training or the checkpoint that follows."""

    def call(*a, **kw):
        try:
            return fn(*a, **kw)
        except OSError:
            return None

    return call
