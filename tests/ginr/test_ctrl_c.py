"""Ctrl-C on a real `jaxsys ginr train` process (SIGINT from outside) saves the last completed step:
with tiny fast steps (where Ctrl-C used to land mid-dispatch, after the state was donated), and with
stdout/stderr a pipe whose reader has gone (`... 2>&1 | tee log`, then Ctrl-C kills tee too)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from jaxsys.train import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
# tiny fast steps (a few ms each), no periodic checkpoint, no evaluation
ARGV = "--data png20 --dim 16 --num-lp 4 --depth 1 --hidden 8 --num-freqs 3 --batch 2 --coords 16".split()
ARGV += "--scan-chunk 0 --steps 1000000 --checkpoint-every 1000000 --eval-every 0".split()


# The child must react to Ctrl-C even if this process ignores SIGINT (an ignored signal stays ignored
# across exec, and Python then installs no handler): a tiny trampoline resets it and execs the CLI
# (no preexec_fn, which forks a multithreaded process).
_TRAMPOLINE = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def _start(run_dir: Path, stdout) -> subprocess.Popen:
    env = {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "jaxsys.cli", "ginr", "train", *ARGV, "--run-dir", str(run_dir)]
    argv = [sys.executable, "-c", _TRAMPOLINE, *cli]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.STDOUT)


def _wait_for_steps(proc: subprocess.Popen, run_dir: Path, n: int, timeout: float = 240) -> None:
    metrics = run_dir / "metrics.jsonl"
    t0 = time.time()
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= n):
        assert proc.poll() is None, f"training exited early with {proc.returncode}"
        assert time.time() - t0 < timeout, "training did not reach its first steps in time"
        time.sleep(0.1)


def _last_step(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return max(json.loads(line)["step"] for line in lines if line.strip())


def test_sigint_saves_the_last_completed_step(tmp_path):
    """Both cases run at once (each process spends most of its time compiling)."""
    runs = {"terminal": tmp_path / "terminal", "closed_pipe": tmp_path / "closed_pipe"}
    procs = {k: _start(run, subprocess.PIPE if k == "closed_pipe" else subprocess.DEVNULL) for k, run in runs.items()}
    try:
        for k, proc in procs.items():
            _wait_for_steps(proc, runs[k], 50)
            if k == "closed_pipe":
                proc.stdout.close()  # the reader went away: every later write fails with EPIPE
            proc.send_signal(signal.SIGINT)
        rcs = {k: proc.wait(timeout=120) for k, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for k, run in runs.items():
        assert rcs[k] != 0, k
        with Checkpointer(run / "ckpt") as ckpt:
            saved = ckpt.latest_step()
        assert saved is not None, f"{k}: Ctrl-C saved no checkpoint"
        assert saved == _last_step(run), k  # the step the metrics last recorded: nothing lost
