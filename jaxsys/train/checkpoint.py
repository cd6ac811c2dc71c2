"""Orbax checkpoints: atomic, step-numbered, resumable, restorable onto other shardings.

ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=3)
ckpt.save(step, state, meta={"loss": 0.1})
state, meta = ckpt.restore(like=state)          # latest step; `like` gives structure/shardings
check_resume_config(run_dir, saved_cfg, cfg, may_change=("steps",), advice="use another --run-dir")
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxsys.errors import ConfigError, DataError


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


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def config_changes(saved: Any, current: Any, *, ignore: Iterable[str] = (), name: str = "") -> dict[str, tuple]:
    """{dotted field name: (saved value, current value)} for every leaf of two nested config dicts
    (e.g. `dataclasses.asdict` of a config, or its JSON) that differs; a field on one side only
    differs from `<missing>`. Dotted names in `ignore` are left out."""
    ignore = frozenset(ignore)
    if name in ignore:
        return {}
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out: dict[str, tuple] = {}
        for k in dict.fromkeys([*saved, *current]):
            sub = f"{name}.{k}" if name else str(k)
            out.update(config_changes(saved.get(k, _MISSING), current.get(k, _MISSING), ignore=ignore, name=sub))
        return out
    return {} if saved == current else {name or "config": (saved, current)}


def check_resume_config(
    where: str | os.PathLike, saved: Any, current: Any, *, may_change: Iterable[str] = (), advice: str
) -> None:
    """Before restoring a checkpoint into this run: raise ConfigError naming the fields (saved ->
    current) where the run in `where` was started with another configuration; fields in
    `may_change` (dotted names) may differ on resume. `advice` ends the message."""
    diff = config_changes(saved, current, ignore=may_change)
    if diff:
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{where} holds a run with a different configuration ({what}); {advice}")
