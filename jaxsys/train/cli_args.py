"""The training flags every system's `train` command shares, spelled once.

    add_train_args(t, steps=3000, checkpoint_every=1000)     # in a system's cli.register
    run_dir = run_dir_from_args(args, "mlp")                 # in its train handler
    mesh = mesh_from_args(args)                              # always a mesh (one device: a 1-device mesh)

Flags: `--steps`, `--run-dir` (resumes automatically when it holds a checkpoint; default: a fresh
`runs/<system>-<time>`), `--seed`, `--checkpoint-every`, `--no-progress`, `--dtype` (where the system
trains in more than one dtype), and the distributed ones from `add_distributed_args` (`--mesh`,
`--fsdp`, `--coordinator`, `--num-processes`, `--process-id`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jaxsys.errors import ConfigError
from jaxsys.train.distributed import add_distributed_args
from jaxsys.train.io import make_run_dir


def positive_int(name: str, *, allow_zero: bool = False):
    """An argparse `type=` that rejects non-integers and values below 1 (or 0) with a clear message,
    before any work starts."""
    lo = 0 if allow_zero else 1

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be >= {lo}, got {v}")
        return v

    return parse


def add_train_args(
    parser: Any,
    *,
    steps: int,
    checkpoint_every: int,
    seed: int = 0,
    dtypes: tuple[str, ...] = (),
    mesh_default: str = "",
) -> None:
    """Add the shared training flags to a system's `train` parser (see the module docstring)."""
    parser.add_argument(
        "--steps", type=positive_int("--steps"), default=steps, help=f"optimizer steps (default {steps})"
    )
    parser.add_argument(
        "--run-dir",
        dest="run_dir",
        default="",
        help="run directory; training resumes from its last checkpoint when it holds "
        "one (default: a fresh runs/<system>-<time>)",
    )
    parser.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    parser.add_argument(
        "--checkpoint-every",
        dest="checkpoint_every",
        type=positive_int("--checkpoint-every"),
        default=checkpoint_every,
        help=f"steps between checkpoints (default {checkpoint_every})",
    )
    parser.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    if dtypes:
        parser.add_argument(
            "--dtype", choices=list(dtypes), default=dtypes[0], help=f"parameter dtype (default {dtypes[0]})"
        )
    add_distributed_args(parser, mesh_default=mesh_default)


def run_dir_from_args(args: Any, system: str, *, root: str | Path = "runs") -> Path:
    """`--run-dir` as a Path, or a fresh `root/<system>-<time>`. A multi-process run must name one
    folder that every process shares."""
    if getattr(args, "run_dir", ""):
        return Path(args.run_dir)
    if getattr(args, "num_processes", None) not in (None, 1):
        raise ConfigError("a multi-process run needs --run-dir (the same folder for every process)")
    return make_run_dir(root, system)
