"""Is the one training loop (always on a mesh) slower than a bare loop on one device?

For the MLP and the GPT, each round times, in one run of this script:

    loop  the library's `train()` on one device (a one-device mesh): batches, metrics JSONL every
          log_every steps, progress bookkeeping, the mesh-jitted step;
    bare  a plain Python loop over the module-level jitted `train_step` on the same batches;
    old   the loop before the fold (`train()` of the commit before `sharded.py` was deleted, its
          whole `jaxsys` package extracted with `git archive`).

A second, finer check isolates the step call: in one process, blocks of steps through the mesh-jitted
step that the loop uses and through the module-level `train_step` alternate (`--blocks` of each).

Every variant runs in a fresh child process per round (the same start for all three), first once
untimed (compile, warm-up), then timed over the same window of steps (after `--skip` steps),
synchronised at both ends. The report is the median time per step over `--rounds` rounds; the
variants take turns within a round so that machine noise hits all of them alike.

    python experiments/bench_one_loop.py                   # writes runs/bench_one_loop-<time>/result.json
    python experiments/bench_one_loop.py --rounds 7 --out /tmp/one_loop.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("mlp", "gpt")


# ------------------------------------------------------------------------------ configurations
def mlp_setup(steps: int):
    from jaxsys.mlp.data import load
    from jaxsys.mlp.train import TrainConfig

    # the CLI defaults (digits, 64-64 hidden, batch 64); eval and checkpoint only at the end
    return load("classify"), TrainConfig(steps=steps, eval_every=steps, checkpoint_every=steps)


def gpt_setup(steps: int):
    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.data import from_text, read_text

    # the CLI defaults on the packaged names (n_embd 64, 4 heads, 2 layers, batch 32), eval at the end
    data = from_text(read_text(ROOT / "jaxsys" / "data" / "names.txt"), "docs", 512, seed=0)
    cfg = GPTConfig(data.tokenizer.vocab_size, n_embd=64, n_head=4, n_layer=2, block_size=data.train.seq_len)
    return data, cfg, dict(steps=steps, batch_size=32, eval_every=0, eval_batches=2, checkpoint_every=0)


class Window:
    """Wall time between step `skip` and step `end`, synchronised on the state at both ends."""

    def __init__(self, skip: int, end: int):
        self.skip, self.end, self.t0, self.t1 = skip, end, None, None

    def __call__(self, step: int, state) -> None:
        if step in (self.skip, self.end):
            jax.block_until_ready(state)
            if step == self.skip:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()

    def us_per_step(self) -> float:
        return (self.t1 - self.t0) / (self.end - self.skip) * 1e6


# ------------------------------------------------------------------------------ the variants
def run_loop(system: str, steps: int, skip: int, tmp: Path) -> float:
    w = Window(skip, steps - 1)
    if system == "mlp":
        from jaxsys.mlp.train import train

        data, cfg = mlp_setup(steps)
        train(cfg, tmp / "mlp", data=data, log=lambda m: None, progress=False, on_step=w)
    else:
        from jaxsys.gpt.config import TrainConfig
        from jaxsys.gpt.train import train

        data, cfg, kw = gpt_setup(steps)
        train(data, cfg, TrainConfig(**kw), tmp / "gpt", log=None, progress=False, on_step=w, export=False)
    return w.us_per_step()


def run_bare(system: str, steps: int, skip: int) -> float:
    w = Window(skip, steps - 1)
    if system == "mlp":
        from jaxsys.mlp.train import _batch_indices, init_state, train_step

        data, cfg = mlp_setup(steps)
        scfg = cfg.step_config(data)
        state, n = init_state(jax.random.key(cfg.seed), scfg), len(data.x_train)
        for step in range(steps):
            idx = _batch_indices(n, cfg.batch, cfg.seed, step)
            state, m = train_step(state, data.x_train[idx], data.y_train[idx], cfg=scfg)
            w(step + 1, state)
    else:
        from jaxsys.gpt.config import TrainConfig
        from jaxsys.gpt.train import init_state, train_step

        data, cfg, kw = gpt_setup(steps)
        tcfg = TrainConfig(**kw)
        scfg = tcfg.step_config(cfg)
        state = init_state(jax.random.key(tcfg.seed), scfg)
        for step in range(1, steps + 1):
            b = data.train.batch(step - 1, tcfg.batch_size, tcfg.seed)
            state, loss = train_step(state, b.tokens, b.targets, b.mask, cfg=scfg)
            w(step, state)
    return w.us_per_step()


def old_worker(system: str, steps: int, skip: int, tmp: Path) -> float:
    """The pre-fold loop; runs with PYTHONPATH at the extracted old package (child process). A first
    untimed run compiles and warms up, as the in-process variants were."""
    w = Window(skip, steps - 1)
    if system == "mlp":  # the old MLP loop has no on_step: time it through its module-level step
        import jaxsys.mlp.train as old
        from jaxsys.mlp.data import load

        data, cfg = load("classify"), old.TrainConfig(steps=steps, eval_every=steps, ckpt_every=steps)
        old.train(cfg, tmp / "warm", data=data, log=lambda m: None, progress=False)
        step_fn, calls = old.train_step, [0]

        def timed(state, *a, **k):
            w(calls[0], state)  # before call i: steps 0..i-1 and their loop bodies are done
            calls[0] += 1
            return step_fn(state, *a, **k)

        old.train_step = timed
        old.train(cfg, tmp / "timed", data=data, log=lambda m: None, progress=False)
    else:
        from jaxsys.gpt.train import TrainConfig, train

        data, cfg, kw = gpt_setup(steps)
        for name, hook in (("warm", None), ("timed", w)):
            train(data, cfg, TrainConfig(**kw), tmp / name, log=None, progress=False, on_step=hook, export=False)
    return w.us_per_step()


def old_rev(system: str) -> str:
    """The commit before the one that deleted jaxsys/<system>/sharded.py."""
    path = f"jaxsys/{system}/sharded.py"
    out = subprocess.run(["git", "rev-list", "-n", "1", "HEAD", "--", path], cwd=ROOT, capture_output=True, text=True)
    rev = out.stdout.strip()
    if not rev:
        raise SystemExit(f"no commit in this checkout's history touches {path}")
    return rev + "^"


def extract(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev, "jaxsys"], cwd=ROOT, capture_output=True, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    tar = dest / "old.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


def step_ab(system: str, blocks: int, block: int = 50) -> dict:
    """µs per step of the loop's mesh-jitted step vs the module-level `train_step`, on the same
    batches, blocks interleaved in this process (median over `blocks`)."""
    from jaxsys.train import sharding as sh

    if system == "mlp":
        from jaxsys.mlp import train as t

        data, cfg = mlp_setup(block)
        scfg, n = cfg.step_config(data), len(data.x_train)
        idx = [t._batch_indices(n, cfg.batch, cfg.seed, i) for i in range(block)]
        batches = [(data.x_train[i], data.y_train[i]) for i in idx]
        key = jax.random.key(cfg.seed)
    else:
        from jaxsys.gpt import train as t
        from jaxsys.gpt.config import TrainConfig

        data, cfg, kw = gpt_setup(block)
        scfg = TrainConfig(**kw).step_config(cfg)
        batches = [tuple(data.train.batch(i, kw["batch_size"], 0)) for i in range(block)]
        key = jax.random.key(0)
    ms = t.make_sharded_train_step(sh.make_mesh(None), scfg)
    fns = {"mesh_step": ms.step, "train_step": lambda st, *b: t.train_step(st, *b, cfg=scfg)}
    states = {"mesh_step": ms.put_state(t.init_state(key, scfg)), "train_step": t.init_state(key, scfg)}
    out: dict = {k: [] for k in fns}
    for r in range(blocks + 1):
        for k, f in fns.items():
            st = jax.block_until_ready(states[k])
            t0 = time.perf_counter()
            for b in batches:
                st, _ = f(st, *b)
            states[k] = jax.block_until_ready(st)
            if r:  # block 0 compiles and warms up
                out[k].append((time.perf_counter() - t0) / block * 1e6)
    return {"us_per_step": out, "median_us_per_step": {k: statistics.median(v) for k, v in out.items()}}


def worker(variant: str, system: str, steps: int, skip: int, tmp: Path) -> float:
    if variant == "old":
        return old_worker(system, steps, skip, tmp)
    if variant == "loop":
        run_loop(system, steps, skip, tmp / "warm")
        return run_loop(system, steps, skip, tmp / "timed")
    run_bare(system, steps, skip)
    return run_bare(system, steps, skip)


def run_child(variant: str, system: str, steps: int, skip: int, pkg: Path, tmp: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(pkg)}
    run_tmp = tempfile.mkdtemp(dir=tmp)  # fresh run dirs: never a resume
    cmd = [sys.executable, __file__, "--worker", variant, "--system", system, "--steps", str(steps)]
    p = subprocess.run([*cmd, "--skip", str(skip), "--tmp", run_tmp], env=env, capture_output=True, text=True, cwd=tmp)
    if p.returncode:
        raise SystemExit(f"{variant} {system} failed:\n{p.stderr[-3000:]}")
    return float(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mlp-steps", type=int, default=3000)
    ap.add_argument("--gpt-steps", type=int, default=300)
    ap.add_argument("--skip", type=int, default=None, help="warm-up steps not timed (default: steps / 6)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--blocks", type=int, default=10, help="blocks per variant in the step A/B")
    ap.add_argument("--no-old", action="store_true", help="skip the pre-fold loop (e.g. outside a git checkout)")
    ap.add_argument("--out", default="", help="result JSON (default: runs/bench_one_loop-<time>/result.json)")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--system", default="", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import jaxsys

        from_root = Path(jaxsys.__file__).parents[1] == ROOT
        assert from_root == (args.worker != "old"), f"{args.worker} imported {jaxsys.__file__}"
        print(worker(args.worker, args.system, args.steps, args.skip, Path(args.tmp)))
        return

    sys.path.insert(0, str(ROOT))
    from jaxsys.train.io import atomic_write_json, make_run_dir

    out = Path(args.out) if args.out else make_run_dir(ROOT / "runs", "bench_one_loop") / "result.json"
    systems = [s for s in args.systems.split(",") if s]
    steps = {"mlp": args.mlp_steps, "gpt": args.gpt_steps}
    res: dict = {
        "command": " ".join(["python", *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "rounds": args.rounds,
        "systems": {},
    }
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        for s in systems:
            n = steps[s]
            skip = args.skip if args.skip is not None else n // 6
            pkg = {"loop": ROOT, "bare": ROOT}
            if not args.no_old:
                pkg["old"] = extract(old_rev(s), td / f"old-{s}")
            variants = list(pkg)
            times: dict = {v: [] for v in variants}
            for r in range(args.rounds):
                for v in variants[r % len(variants) :] + variants[: r % len(variants)]:  # take turns
                    times[v].append(run_child(v, s, n, skip, pkg[v], td))
                print(s, r, {k: round(v[-1], 1) for k, v in times.items()}, flush=True)
            med = {k: statistics.median(v) for k, v in times.items()}
            entry = {"steps": n, "timed_steps": n - 1 - skip, "us_per_step": times, "median_us_per_step": med}
            entry["loop_over_bare"] = med["loop"] / med["bare"]
            if "old" in med:
                entry["old_rev"] = old_rev(s)
                entry["loop_over_old"] = med["loop"] / med["old"]
            entry["step_ab"] = step_ab(s, args.blocks)
            entry["mesh_step_over_train_step"] = (
                entry["step_ab"]["median_us_per_step"]["mesh_step"]
                / entry["step_ab"]["median_us_per_step"]["train_step"]
            )
            res["systems"][s] = entry
            print(s, json.dumps({k: v for k, v in entry.items() if k not in ("us_per_step", "step_ab")}), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
