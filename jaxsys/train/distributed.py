"""Several processes and the command line of a run on a mesh: joining a multi-process run
(`jax.distributed.initialize`), the `--mesh/--fsdp/--coordinator/--num-processes/--process-id` flags,
and the mesh a CLI run trains on."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import Mesh

from jaxsys.errors import ConfigError
from jaxsys.train.sharding import make_mesh


def maybe_initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: int = 300,
) -> bool:
    """Join a multi-process run with `jax.distributed.initialize` when asked to; True if joined.

    Arguments come from the CLI (`--coordinator host:port --num-processes N --process-id I`) or else
    from the environment: JAX_COORDINATOR_ADDRESS (read by JAX itself), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID; inside Slurm or Open MPI jobs JAX detects all three itself. Nothing asked (or a
    single process) returns False and leaves JAX alone. Must run before any JAX computation.
    """
    env = os.environ if env is None else env

    def _int(name: str, v: Any) -> int | None:
        if v is None or v == "":
            return None
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {v!r}") from None

    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _int(
        "--num-processes/JAX_NUM_PROCESSES",
        num_processes if num_processes is not None else env.get("JAX_NUM_PROCESSES"),
    )
    process_id = _int(
        "--process-id/JAX_PROCESS_ID", process_id if process_id is not None else env.get("JAX_PROCESS_ID")
    )
    if jax.distributed.is_initialized():
        return True
    cluster = ("SLURM_JOB_ID" in env and _int("SLURM_NTASKS", env.get("SLURM_NTASKS", "1")) > 1) or _int(
        "OMPI_COMM_WORLD_SIZE", env.get("OMPI_COMM_WORLD_SIZE", "1")
    ) > 1
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if all(v is None for v in given.values()) and not cluster:
        return False
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {num_processes}")
    if num_processes == 1 and process_id in (None, 0):
        return False
    if not cluster:
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ConfigError(
                f"multi-process run needs --coordinator, --num-processes and --process-id "
                f"(or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID); "
                f"missing: {', '.join(missing)}"
            )
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id {process_id} must be in [0, {num_processes})")
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator {coordinator!r} must be host:port (e.g. 10.0.0.1:1234)")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise ConfigError(
            "jax.distributed.initialize must run before any JAX computation; call "
            "maybe_initialize_distributed first thing in the entrypoint"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )
    return True


def add_distributed_args(parser: Any, *, mesh_default: str = "") -> None:
    """Add `--mesh`, `--fsdp`, `--coordinator`, `--num-processes`, `--process-id` to an argparse
    parser (read back with `mesh_from_args`)."""
    parser.add_argument(
        "--mesh", default=mesh_default, help="device mesh, e.g. 'data=4,model=2' (default: all devices on data)"
    )
    parser.add_argument(
        "--fsdp", action="store_true", help="also shard large parameters and optimizer moments over 'data'"
    )
    parser.add_argument(
        "--coordinator",
        default=None,
        help="host:port of process 0 for a multi-process run (or JAX_COORDINATOR_ADDRESS)",
    )
    parser.add_argument(
        "--num-processes", type=int, default=None, help="processes in a multi-process run (or JAX_NUM_PROCESSES)"
    )
    parser.add_argument(
        "--process-id", type=int, default=None, help="this process's index in [0, num-processes) (or JAX_PROCESS_ID)"
    )


def cpu_devices_env(n: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process that simulates `n` CPU devices
    (XLA_FLAGS=--xla_force_host_platform_device_count=n, JAX_PLATFORMS=cpu)."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={int(n)}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def mesh_from_args(args: Any) -> Mesh | None:
    """Join a multi-process run when asked (`--coordinator/--num-processes/--process-id` or the
    JAX_* variables), then build the mesh of `--mesh`. None means no --mesh in one process: the
    training loop then takes its default (`sharding.batch_mesh`: as many devices as divide the batch)."""
    joined = maybe_initialize_distributed(
        getattr(args, "coordinator", None), getattr(args, "num_processes", None), getattr(args, "process_id", None)
    )
    spec = getattr(args, "mesh", "") or ""
    if not spec and not joined:
        return None
    return make_mesh(spec or None)
