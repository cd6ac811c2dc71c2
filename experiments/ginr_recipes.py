"""GINR recipe study at a fixed budget of the process's CPU time (issue 22).

One recipe per process: a model config (`jaxsys.ginr.model.get_config(name, **overrides)`) and training
settings, trained until the process has spent --cpu-min CPU-minutes in training steps (compilation,
i.e. the first step, and evaluation are measured and reported apart), then evaluated on the first
--eval-images test images on the full 32x32 grid (`jaxsys.ginr.train.evaluate`). One JSON line per run is
appended to --out.

Why CPU time: the machine is shared, so wall-clock is noisy; the issue's "10 minutes on an idle 2-core
machine" is at most 20 CPU-minutes.

Schedule: the step below is the library's (`jaxsys.ginr.train.loss_fn`, AdamW after global-norm
clipping, exactly optax.adamw's update), but the learning rate is fed in per step from the host:
linear warmup over `warmup_steps` updates, then cosine from `lr` to `final_lr_frac * lr` over the
*CPU budget* (the library's `TrainConfig` decays over a fixed step count, which a CPU budget does
not know in advance). The summary records the steps reached, so a step-based schedule with that many
steps reproduces the recipe.

    PYTHONPATH=$PWD python experiments/ginr_recipes.py --name base --cpu-min 2
    PYTHONPATH=$PWD python experiments/ginr_recipes.py --name lr3e-3 --set lr=3e-3 --set hidden=128

--set key=value: GinrConfig fields go to the model, TrainConfig fields to training; `loss` (mse | l1)
is an experiment-only option; so are `downsample=f` (train and evaluate on f x f box-averaged images)
and `sr=f` (super-resolution training: the encoder sees the f x f box-averaged image, set image_size
to 32 / f, while coordinates and targets come from the full 32x32 image; the test PSNR is then the
model's 1x reconstruction of the small test images, and experiments/ginr_superres.py measures its f x). --run-dir with --ckpt-cpu-min makes a resumable long run (pickled
state every so many CPU-minutes and test PSNR vs CPU and wall time appended to <run-dir>/curve.jsonl).
"""

import argparse
import ast
import dataclasses
import json
import math
import os
import pickle
import resource
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxsys.ginr import data as gd  # noqa: E402
from jaxsys.ginr import model as gm  # noqa: E402
from jaxsys.ginr import train as gt  # noqa: E402
from jaxsys.train.io import atomic_write_bytes  # noqa: E402

MODEL_FIELDS = {f.name for f in dataclasses.fields(gm.GinrConfig)}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(gt.TrainConfig)}
EXTRA = {"loss": "mse", "downsample": 1, "sr": 1}


def cpu_s() -> float:
    """CPU seconds (user + system) of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parse_sets(items):
    model, train, extra = {}, {}, dict(EXTRA)
    for it in items:
        k, _, v = it.partition("=")
        try:
            val = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            val = v
        if k in MODEL_FIELDS:
            model[k] = val
        elif k in TRAIN_FIELDS:
            train[k] = val
        elif k in EXTRA:
            extra[k] = val
        else:
            raise SystemExit(f"unknown setting {k!r}")
    return model, train, extra


def make_tx(tc: gt.TrainConfig):
    """optax.adamw without its learning-rate scaling (applied in the step), after clipping."""
    parts = [optax.scale_by_adam(), optax.add_decayed_weights(tc.weight_decay)]
    if tc.grad_clip > 0:
        parts.insert(0, optax.clip_by_global_norm(tc.grad_clip))
    return optax.chain(*parts)


def l1_loss(params, batch, mc, bf16=False):
    images = batch["images"]
    if bf16:
        params, images = gt._cast(params, jnp.bfloat16), images.astype(jnp.bfloat16)
    pred = gm.decode(params, gm.encode(params, images, mc), batch["coords"], mc).astype(jnp.float32)
    d = pred - batch["targets"]
    per_image_mse = (d**2).mean(axis=(1, 2))
    return jnp.abs(d).mean(), per_image_mse


@partial(jax.jit, static_argnames=("mc", "tc", "loss"), donate_argnums=0)
def step(state, batch, lr, mc, tc, loss="mse"):
    fn = gt.loss_fn if loss == "mse" else l1_loss
    (val, per_image), grads = jax.value_and_grad(fn, has_aux=True)(state["params"], batch, mc, tc.bf16)
    upd, opt_state = make_tx(tc).update(grads, state["opt_state"], state["params"])
    params = jax.tree_util.tree_map(lambda p, u: p - lr * u, state["params"], upd)
    new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new, {"loss": val, "psnr": gt.psnr(per_image).mean()}


def lr_at(tc: gt.TrainConfig, update: int, frac: float) -> float:
    if update < tc.warmup_steps:
        return tc.lr * (update + 1) / tc.warmup_steps
    t = min(max(frac, 0.0), 1.0)
    end = tc.lr * tc.final_lr_frac
    return end + (tc.lr - end) * 0.5 * (1 + math.cos(math.pi * t))


def box_downsample(x_u8: np.ndarray, f: int) -> np.ndarray:
    """Area (box) average over f x f blocks, rounded back to uint8."""
    if f == 1:
        return x_u8
    N, S, _, C = x_u8.shape
    x = x_u8.astype(np.float32).reshape(N, S // f, f, S // f, f, C).mean(axis=(2, 4))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def box_downsample_f(x: np.ndarray, f: int) -> np.ndarray:
    """box_downsample of float images in [0, 1] (a training batch), through uint8 as the test inputs."""
    u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return box_downsample(u8, f).astype(np.float32) / 255.0


def load_data(n_eval: int, downsample: int = 1):
    cache = ROOT / "runs" / "cache"
    data = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
    train_x, _ = gd.load_cifar10(data, "train", cache_dir=cache)
    test_x, _ = gd.load_cifar10(data, "test", cache_dir=cache)
    return box_downsample(train_x, downsample), box_downsample(eval_subset(test_x, n_eval), downsample)


def eval_subset(test_x: np.ndarray, n: int) -> np.ndarray:
    """n fixed test images spread over the classes: every (10000 // n)-th image (the JPEG copy's test
    split is sorted by class, so its first 1,000 images are all airplanes)."""
    return test_x[:: max(len(test_x) // n, 1)][:n]


def save_pickle(path: Path, obj) -> None:
    atomic_write_bytes(path, pickle.dumps(jax.device_get(obj)))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--config", default="fast")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cpu-min", type=float, default=2.0, help="CPU-minutes of training steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "runs" / "recipes.jsonl"))
    ap.add_argument("--save-params", default="", help="pickle the final params here")
    ap.add_argument("--run-dir", default="", help="resumable run: state.pkl + curve.jsonl here")
    ap.add_argument("--ckpt-cpu-min", type=float, default=10.0)
    ap.add_argument("--ckpt-wall-min", type=float, default=14.0, help="also checkpoint after this much wall time")
    ap.add_argument("--eval-cpu-min", type=float, default=0.0, help="test PSNR every so many CPU-minutes")
    a = ap.parse_args(argv)

    mo, to, extra = parse_sets(a.set)
    mc = gm.get_config(a.config, **mo)
    to.setdefault("seed", a.seed)
    tc = gt.TrainConfig(**to)
    skey = dataclasses.replace(tc.step_config(), lr=1.0, warmup_steps=0, final_lr_frac=0.0, steps=1)
    budget = a.cpu_min * 60.0
    sr = int(extra["sr"])
    if sr > 1 and extra["downsample"] != 1:
        raise SystemExit("sr and downsample exclude each other")
    train_x, test_x = load_data(a.eval_images, int(extra["downsample"]))
    if sr > 1:  # the model reads small images, the batches' coordinates and targets stay at 32x32
        test_x = box_downsample(test_x, sr)

    run_dir = Path(a.run_dir) if a.run_dir else None
    ck = run_dir / "state.pkl" if run_dir else None
    cpu_train = wall_train = 0.0
    if ck is not None and ck.is_file():
        saved = pickle.loads(ck.read_bytes())
        state = jax.tree_util.tree_map(jnp.asarray, saved["state"])
        cpu_train, wall_train = saved["cpu_train"], saved["wall_train"]
        print(f"resumed at step {int(state['step'])}, {cpu_train / 60:.1f} CPU-min", flush=True)
    else:
        params = gm.init_params(jax.random.PRNGKey(tc.seed), mc)
        state = {"params": params, "opt_state": make_tx(tc).init(params), "step": jnp.zeros((), jnp.int32)}
        if run_dir:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "recipe.json").write_text(
                json.dumps({"argv": sys.argv, "model": dataclasses.asdict(mc), "train": dataclasses.asdict(tc)})
            )
    start = int(state["step"])
    batches = gd.Batches(train_x, tc.batch_size, tc.num_sample_coords, tc.seed, start, tc.prefetch, tc.coord_jitter)

    def evaluate(params):
        c0, w0 = cpu_s(), time.perf_counter()
        r = gt.evaluate(params, test_x, mc)
        return r["psnr"], cpu_s() - c0, time.perf_counter() - w0

    compile_cpu = compile_wall = None
    next_ckpt = cpu_train + a.ckpt_cpu_min * 60
    last_ckpt_wall = time.perf_counter()
    next_eval = cpu_train + min(a.eval_cpu_min * 60, max(30.0, 0.5 * cpu_train)) if a.eval_cpu_min else float("inf")
    curve = run_dir / "curve.jsonl" if run_dir else None
    psnrs, n = [], start
    try:
        while cpu_train < budget:
            c0, w0 = cpu_s(), time.perf_counter()
            batch = next(batches)
            if sr > 1:
                batch = {**batch, "images": box_downsample_f(batch["images"], sr)}
            lr = lr_at(tc, n, cpu_train / budget)
            state, m = step(state, batch, jnp.float32(lr), mc, skey, extra["loss"])
            loss = float(m["loss"])
            dc, dw = cpu_s() - c0, time.perf_counter() - w0
            if compile_cpu is None:
                compile_cpu, compile_wall = dc, dw
            else:
                cpu_train += dc
                wall_train += dw
            n += 1
            if not math.isfinite(loss):
                print(f"diverged at step {n}", flush=True)
                break
            psnrs.append(float(m["psnr"]))
            if n % 50 == 0:
                print(
                    f"step {n} cpu {cpu_train / 60:.2f}m wall {wall_train / 60:.2f}m lr {lr:.2e} "
                    f"train psnr {np.mean(psnrs[-50:]):.2f}",
                    flush=True,
                )
            if cpu_train >= next_eval:
                p, ec, ew = evaluate(state["params"])
                rec = {"step": n, "cpu_s": cpu_train, "wall_s": wall_train, "test_psnr": p, "lr": lr}
                rec.update(eval_cpu_s=ec, eval_wall_s=ew, time=time.strftime("%H:%M:%S"))
                with open(curve, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"eval {rec}", flush=True)
                # geometric early (a log-time curve), then every --eval-cpu-min
                next_eval = cpu_train + min(a.eval_cpu_min * 60, max(30.0, 0.5 * cpu_train))
            if ck is not None and (
                cpu_train >= next_ckpt or time.perf_counter() - last_ckpt_wall > a.ckpt_wall_min * 60
            ):
                save_pickle(ck, {"state": state, "cpu_train": cpu_train, "wall_train": wall_train})
                next_ckpt = cpu_train + a.ckpt_cpu_min * 60
                last_ckpt_wall = time.perf_counter()
    finally:
        batches.close()
    if ck is not None:
        save_pickle(ck, {"state": state, "cpu_train": cpu_train, "wall_train": wall_train})
    p, ec, ew = evaluate(state["params"])
    rec = {
        "name": a.name,
        "config": a.config,
        "set": a.set,
        "seed": tc.seed,
        "cpu_min_budget": a.cpu_min,
        "steps": n,
        "cpu_min": round(cpu_train / 60, 3),
        "wall_min": round(wall_train / 60, 3),
        "cpu_per_wall": round(cpu_train / max(wall_train, 1e-9), 3),
        "compile_cpu_s": round(compile_cpu or 0.0, 1),
        "compile_wall_s": round(compile_wall or 0.0, 1),
        "test_psnr": round(p, 3),
        "eval_images": len(test_x),
        "eval_cpu_s": round(ec, 1),
        "eval_wall_s": round(ew, 1),
        "train_psnr_last50": round(float(np.mean(psnrs[-50:])), 3) if psnrs else None,
        "num_params": gm.num_params(state["params"]),
        "loadavg": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cmd": " ".join(sys.argv),
    }
    if curve is not None:
        with open(curve, "a") as f:
            f.write(
                json.dumps({"step": n, "cpu_s": cpu_train, "wall_s": wall_train, "test_psnr": p, "final": True}) + "\n"
            )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if a.save_params:
        Path(a.save_params).parent.mkdir(parents=True, exist_ok=True)
        save_pickle(Path(a.save_params), {"params": state["params"], "model": dataclasses.asdict(mc)})
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
