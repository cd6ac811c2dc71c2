"""GINR on one device: the one training loop on a mesh (jaxsys.ginr.train.train) against the loop it
replaced (the single-device `train` before sharded.py was folded in, with that commit's model code,
rebuilt from git), and a bare jitted `train_step` loop as the floor; side by side in one process.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_ginr_loop.py                # tiny and fast
    python experiments/bench_ginr_loop.py --configs tiny --rounds 3 --steps 200

Each round runs every variant, interleaved so machine load hits them alike. Two numbers per variant:
wall-clock training seconds per step (the loops' own timing: compile excluded, as the first step of
a run is timed apart), and process CPU seconds per step, the difference of two runs of S and S/10
steps divided by the step difference (run setup, final evaluation and PNGs cancel). CPU time is the
steadier number on a machine shared with other work. Reported: the medians over rounds and new/old. Writes a run directory
(default runs/bench_ginr_loop-<time>/) holding the runs and result.json.
"""

import argparse
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxsys.ginr import data as gdata  # noqa: E402
from jaxsys.ginr import model as gm  # noqa: E402
from jaxsys.ginr import train as gt  # noqa: E402
from jaxsys.train import sharding as sh  # noqa: E402
from jaxsys.train.io import atomic_write_json, make_run_dir  # noqa: E402

OLD_COMMIT = "0d3446a"  # the last commit with ginr/sharded.py beside ginr/train.py


def old_ginr(commit: str, where: Path):
    """The jaxsys.ginr package of `commit` as the package `oldginr` (its own model, scan and loop)."""
    pkg = where / "oldginr"
    pkg.mkdir()
    for name in ("__init__", "data", "mamba", "model", "scan", "train"):
        src = subprocess.run(
            ["git", "show", f"{commit}:jaxsys/ginr/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (pkg / f"{name}.py").write_text(src.replace("jaxsys.ginr", "oldginr"))
    sys.path.insert(0, str(where))
    return importlib.import_module("oldginr.train"), importlib.import_module("oldginr.model")


CONFIGS = {  # name: (model overrides of "fast", batch, pixels per image)
    "tiny": (dict(dim=16, num_lp=4, depth=1, hidden=8, num_freqs=3), 10, 256),  # the tour's quick model
    "fast": ({}, 16, 512),
}


def bare_loop(mc, tc, images, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of `train_step` on pre-placed batches, synced per step like the
    loops."""
    mesh = sh.make_mesh(None)
    state = jax.device_get(gt.init_state(jax.random.key(0), mc, tc))
    state = sh.put_tree(state, sh.tree_shardings(state, mesh))
    src = gdata.Batches(images, tc.batch_size, tc.num_sample_coords, 0, 0, prefetch=1)
    batches = [sh.shard_batch(src.batch(s), mesh) for s in range(8)]
    src.close()
    cfg = tc.step_config()
    state, m = gt.train_step(state, batches[0], mc, cfg)
    float(m["loss"])
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(steps):
        state, m = gt.train_step(state, batches[s % 8], mc, cfg)
        float(m["loss"])
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,fast")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="steps per run (default: 300 tiny, 20 fast)")
    ap.add_argument("--run-dir", default="")
    args = ap.parse_args()
    out = Path(args.run_dir) if args.run_dir else make_run_dir("runs", "bench_ginr_loop")
    tmp = tempfile.TemporaryDirectory()
    ot, om = old_ginr(OLD_COMMIT, Path(tmp.name))
    x, _ = gdata.load_png20()
    quiet = dict(log=lambda *a: None, progress=False)
    results = {}
    for name in args.configs.split(","):
        over, batch, coords = CONFIGS[name]
        steps = args.steps or (300 if name == "tiny" else 20)
        mc = gm.get_config("fast", **over)
        omc = om.get_config("fast", **over)
        short = max(steps // 10, 1)
        kw = dict(batch_size=batch, num_sample_coords=coords, eval_every=0, final_eval_images=20)
        loops = {
            "old_loop": lambda n, d: ot.train(omc, ot.TrainConfig(ckpt_every=0, steps=n + 1, **kw), x, x, d, **quiet),
            "new_loop": lambda n, d: gt.train(
                mc, gt.TrainConfig(checkpoint_every=0, steps=n + 1, **kw), x, x, d, **quiet
            ),
        }
        wall = {"old_loop": [], "new_loop": [], "bare_step": []}
        cpu = {"old_loop": [], "new_loop": [], "bare_step": []}
        for k, run in loops.items():  # warm-up: compiles every step, evaluation and PNG function
            run(short, out / f"{name}-{k}-warmup")
        for r in range(args.rounds):
            for k, run in loops.items():
                c = []
                for n in (steps, short):
                    c0 = time.process_time()
                    run(n, out / f"{name}-{k}-{r}-{n}")
                    c.append(time.process_time() - c0)
                wall[k].append(_seconds(out / f"{name}-{k}-{r}-{steps}") / steps)
                cpu[k].append((c[0] - c[1]) / (steps - short))
            w, c = bare_loop(mc, gt.TrainConfig(**kw), x, steps)
            wall["bare_step"].append(w)
            cpu["bare_step"].append(c)
            print(name, r, "ms/step wall", {k: round(v[-1] * 1e3, 3) for k, v in wall.items()}, flush=True)
            print(name, r, "ms/step CPU ", {k: round(v[-1] * 1e3, 3) for k, v in cpu.items()}, flush=True)
        results[name] = {"batch": batch, "pixels_per_image": coords, "steps_per_run": [steps, short]}
        for what, per in (("wall", wall), ("cpu", cpu)):
            med = {k: float(np.median(v)) for k, v in per.items()}
            results[name][what] = {
                "ms_per_step_rounds": {k: [round(t * 1e3, 3) for t in v] for k, v in per.items()},
                "ms_per_step_median": {k: round(t * 1e3, 3) for k, t in med.items()},
                "new_over_old": round(med["new_loop"] / med["old_loop"], 3),
                "new_over_bare": round(med["new_loop"] / med["bare_step"], 3),
            }
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    rec = {
        "what": "GINR one-device training: new one-loop-on-a-mesh vs the old single-device loop vs a bare step",
        "old_commit": OLD_COMMIT,
        "machine": platform.processor() or platform.machine(),
        "devices": str(jax.devices()),
        "rounds": args.rounds,
        "results": results,
    }
    atomic_write_json(out / "result.json", rec)
    print(f"wrote {out / 'result.json'}")


def _seconds(run_dir: Path) -> float:
    """Training seconds (compile step excluded) from the run's last metrics record, unrounded."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float([r for r in recs if "loss" in r][-1]["train_seconds"])


if __name__ == "__main__":
    main()
