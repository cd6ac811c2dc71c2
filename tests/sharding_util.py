"""Child processes on simulated CPU devices for the sharded tests: the pytest process has already
initialised JAX with one device, so multi-device runs happen in a fresh interpreter started with
XLA_FLAGS=--xla_force_host_platform_device_count=N (jaxsys.train.distributed.cpu_devices_env).
A worker script prints one line `RESULT <json>`; `run_worker` returns that JSON."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from jaxsys.train import distributed as dist

ROOT = Path(__file__).resolve().parents[1]


def device_env(n_devices: int) -> dict[str, str]:
    """Environment of a child process with `n_devices` CPU devices that imports this checkout."""
    env = dist.cpu_devices_env(n_devices)
    env["PYTHONPATH"] = str(ROOT)
    return env


def result_of(stdout: str) -> dict:
    """The JSON of the last `RESULT ` line a worker printed."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line in the worker's output:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def run_worker(worker: Path, *args: str, n_devices: int = 4, timeout: float = 300) -> dict:
    """Runs `python worker *args` on `n_devices` simulated devices; asserts it succeeded."""
    proc = subprocess.run(
        [sys.executable, str(worker), *map(str, args)],
        cwd=ROOT,
        env=device_env(n_devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{Path(worker).name} {list(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    )
    return result_of(proc.stdout)


def run_processes(argvs: list[list[str]], n_devices: int, timeout: float = 240) -> list[tuple[int, str, str]]:
    """Starts every argv at once (the processes of one multi-process run, `n_devices` each) and
    waits for all: [(returncode, stdout, stderr)]. Processes still running at the end are killed."""
    env = device_env(n_devices)
    procs = [
        subprocess.Popen(
            [str(a) for a in argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv in argvs
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def free_port() -> int:
    """A loopback port free right now (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
