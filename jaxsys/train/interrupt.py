"""Ctrl-C that never costs the last completed training step, and output that never stops training.

    ctrl_c = StopOnCtrlC(enabled=jax.process_count() == 1)
    try:
        with ctrl_c:
            while step < steps and not ctrl_c.requested:
                state = train_step(state, ...)  # never cut off mid-dispatch by the first Ctrl-C
            if ctrl_c.requested:  # save(step, state), bar.close(), log("interrupted: ..."), KeyboardInterrupt
                ctrl_c.stop(state, step, start, save, log, bar.close)
    except KeyboardInterrupt:
        if not ctrl_c.stopped:  # a second Ctrl-C (or StopOnCtrlC off): the newest whole state, if any
            save_on_interrupt(state, start, save, log)
        raise

`never_raises(print)` swallows OSError (`train.progress.Progress` guards its own writes): a closed stdout/stderr
(`... | tee log` after Ctrl-C, a reader that went away) must not stop training or the save.
"""

import signal
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import jax
import numpy as np


class StopOnCtrlC:
    """While active (main thread, one process, Python's default SIGINT handler): the first Ctrl-C only
    sets `requested`, so the loop finishes the step in flight, saves it and stops; a second Ctrl-C
    raises KeyboardInterrupt at once. A step is never cut off mid-dispatch, so the last completed
    state is always whole (its buffers were not yet donated to a step that never returned)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.requested, self.stopped, self._prev = enabled, False, False, None

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

    def stop(
        self, state: Any, step: int, start: int, save: Callable | None, log: Callable, close: Callable = lambda: None
    ) -> NoReturn:
        """The loop left on `requested` with `state`, the whole state after `step`: `save(step, state)`
        when `step` is past `start` (`save` None: a run without checkpoints), then `close()` (the
        progress bar) and the message, then KeyboardInterrupt, marked `stopped` so that the caller's
        `except KeyboardInterrupt` does not save again. The save first: printing may fail on a closed pipe."""
        saved = save is not None and step > start
        if saved:
            save(step, state)
        close()
        log(f"interrupted: checkpoint saved at step {step}" if saved else "interrupted")
        self.stopped = True
        raise KeyboardInterrupt


def never_raises(fn: Callable) -> Callable:
    """`fn` with OSError swallowed: a closed stdout/stderr (`... | tee log` after Ctrl-C, a reader
    that went away) must not stop training or the checkpoint that follows."""

    def call(*a, **kw):
        try:
            return fn(*a, **kw)
        except OSError:
            return None

    return call


def save_on_interrupt(state: Any, start: int, save: Callable, log: Callable) -> None:
    """A KeyboardInterrupt that did not wait for the step in flight (a second Ctrl-C, or one while
    StopOnCtrlC is off; one process only: a save is collective): `save(step, state)` for the newest
    state (waiting for its step to finish) when its step is past `start`, unless its buffers are gone
    (donated to a step that never returned). The save comes before any message; a failed save is
    said, never raised (it must not mask the interrupt; the periodic checkpoints remain)."""
    try:
        if any(a.is_deleted() for a in jax.tree_util.tree_leaves(state)):
            log("interrupted: the newest state was lost mid-step; the last checkpoint stands")
            return
        jax.block_until_ready(state)
        step = int(np.max(jax.device_get(state.step)))  # (several seeds: one step count each, all equal)
        if step > start:
            save(step, state)
            log(f"interrupted: checkpoint saved at step {step}")
    except Exception as e:  # noqa: BLE001
        log(f"interrupted: could not save a checkpoint ({type(e).__name__}: {e})")
