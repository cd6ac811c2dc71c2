"""Orbax checkpoints: atomic, step-numbered, resumable, restorable onto other shardings.

ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=3)
ckpt.save(step, state, meta={"loss": 0.1})
state, meta = ckpt.restore(like=state)          # latest step; `like` gives structure/shardings
"""

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxsys.errors import DataError


def _abstract(like: Any) -> Any:
    def f(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree_util.tree_map(f, like)


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict | None = None, *, wait: bool = True) -> None:
        args = {"state": ocp.args.StandardSave(state)}
        args["meta"] = ocp.args.JsonSave(meta or {})
        self.manager.save(int(step), args=ocp.args.Composite(**args), force=True)
        if wait:
            self.manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore (state, meta) at `step` (default: latest) into the structure, dtypes and shardings
        of `like` (a pytree of arrays or ShapeDtypeStructs)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise DataError(f"no checkpoint found in {self.directory}")
        try:
            out = self.manager.restore(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()),
            )
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise DataError(f"checkpoint step {step} in {self.directory} does not match the expected state: {e}") from e
        return out["state"], dict(out["meta"] or {})

    def read_meta(self, step: int | None = None) -> dict:
        """The JSON meta saved with `step` (default: latest), without reading any array: lets a
        caller compare configs before restoring into a state of possibly different shapes."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise DataError(f"no checkpoint found in {self.directory}")
        try:
            out = self.manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise DataError(f"checkpoint step {step} in {self.directory} has no readable meta: {e}") from e
        return dict(out["meta"] or {})

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
