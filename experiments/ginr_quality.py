"""Quality at a fixed CPU budget: train Mamba-GINR `fast` on the CIFAR-10 JPEG copy with jaxsys for
--jax-seconds of training time, then the PyTorch port (experiments/torch_ginr.py) for --torch-seconds,
same data order, batch 32, 512 random pixels per image, same optimizer schedule; compare test PSNR on the
full 32x32 grid at equal training time.

    flock /tmp/jaxsys-heavy.lock python experiments/ginr_quality.py --jax-seconds 480 --torch-seconds 240

Writes the JAX run under runs/ginr-quality-*/ (metrics.jsonl, psnr_curve.png, reconstructions.png,
summary.json) and runs/bench/ginr_quality.json (or --out).
"""

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from jaxsys.ginr import data as gd  # noqa: E402
from jaxsys.ginr import model as gm  # noqa: E402
from jaxsys.ginr import train as gt  # noqa: E402
from jaxsys.train import read_metrics  # noqa: E402
from jaxsys.train.io import atomic_write_json, make_run_dir  # noqa: E402


def run_torch(train_x, test_x, seconds, steps, eval_every_s, seed=0):
    import torch
    import torch_ginr

    torch.manual_seed(seed)
    model = torch_ginr.make("fast")
    opt, sched = torch_ginr.make_optimizer(model, total=steps)
    batches = gd.Batches(train_x, 32, 512, seed)
    curve, t_train, step, next_eval = [], 0.0, 0, eval_every_s
    try:
        while t_train < seconds and step < steps:
            b = next(batches)
            t0 = time.perf_counter()
            loss = torch_ginr.train_step(
                model,
                opt,
                sched,
                torch.from_numpy(b["images"]),
                torch.from_numpy(b["coords"]),
                torch.from_numpy(b["targets"]),
            )
            t_train += time.perf_counter() - t0
            step += 1
            if not math.isfinite(loss):
                break
            if t_train >= next_eval:
                curve.append({"step": step, "train_seconds": t_train, "test_psnr": torch_ginr.evaluate(model, test_x)})
                print(f"torch step {step} {t_train:.0f}s test PSNR {curve[-1]['test_psnr']:.2f}", flush=True)
                next_eval += eval_every_s
    finally:
        batches.close()
    final = {"step": step, "train_seconds": t_train, "test_psnr": torch_ginr.evaluate(model, test_x)}
    return curve, final


def plot_curves(out: dict, path) -> None:
    """Test PSNR vs training seconds, JAX and the PyTorch port on one axis (what the notes quote)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxsys.train.io import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("jax_curve", "jaxsys (JAX)"), ("torch_curve", "PyTorch port")):
        pts = out.get(key) or []
        if key == "torch_curve" and out.get("torch_final"):
            pts = pts + [out["torch_final"]]
        if pts:
            ax.plot([p["train_seconds"] for p in pts], [p["test_psnr"] for p in pts], "o-", label=label)
    ax.set_xlabel("training time (s, compile and evaluation excluded)")
    ax.set_ylabel(f"test PSNR (dB, first {out.get('eval_images_curve', 256)} test images)")
    ax.set_title(f"Mamba-GINR {out.get('config', 'fast')}, CIFAR-10 JPEG copy, batch 32 x 512 pixels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    ap.add_argument("--jax-seconds", type=float, default=480)
    ap.add_argument("--torch-seconds", type=float, default=240)
    ap.add_argument("--steps", type=int, default=3000, help="schedule length (both frameworks)")
    ap.add_argument("--eval-images", type=int, default=256)
    ap.add_argument("--final-eval-images", type=int, default=2000)
    ap.add_argument(
        "--plot-only",
        action="store_true",
        help="only redraw psnr_vs_time.png from the --out file",
    )
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "ginr_quality.json"), help="result JSON")
    a = ap.parse_args(argv)
    res_path = Path(a.out)
    if a.plot_only:
        import json

        out = json.loads(res_path.read_text())
        plot_curves(out, Path(out["jax_run_dir"]) / "psnr_vs_time.png")
        print(f"wrote {Path(out['jax_run_dir']) / 'psnr_vs_time.png'}")
        return
    t0 = time.perf_counter()
    cache = ROOT / "runs" / "cache"
    train_x, _ = gd.load_cifar10(a.data, "train", cache_dir=cache)
    test_x, _ = gd.load_cifar10(a.data, "test", cache_dir=cache)
    print(f"data: train {train_x.shape}, test {test_x.shape} ({time.perf_counter() - t0:.0f}s)", flush=True)
    mc = gm.get_config("fast")
    tc = gt.TrainConfig(
        steps=a.steps,
        max_seconds=a.jax_seconds,
        eval_every=100,
        eval_images=a.eval_images,
        final_eval_images=a.final_eval_images,
        checkpoint_every=500,
    )
    run_dir = make_run_dir(ROOT / "runs", "ginr-quality")
    summary = gt.train(mc, tc, train_x, test_x, run_dir, progress=False)
    recs = [r for r in read_metrics(run_dir / "metrics.jsonl") if "test_psnr" in r and not r.get("final")]
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "data": a.data,
        "config": "fast",
        "jax_run_dir": str(run_dir),
        "jax_summary": summary,
        "jax_curve": [{k: r[k] for k in ("step", "train_seconds", "test_psnr")} for r in recs],
        "eval_images_curve": a.eval_images,
    }
    atomic_write_json(res_path, out)
    if a.torch_seconds > 0:
        curve, final = run_torch(train_x, test_x[: a.eval_images], a.torch_seconds, a.steps, 60.0)
        out["torch_curve"], out["torch_final"] = curve, final
        near = [r for r in recs if r["train_seconds"] <= final["train_seconds"]]
        out["jax_at_torch_time"] = near[-1] if near else None
        print(
            f"equal time {final['train_seconds']:.0f}s: torch {final['test_psnr']:.2f} dB "
            f"(step {final['step']}), jax {near[-1]['test_psnr'] if near else float('nan'):.2f} dB "
            f"(step {near[-1]['step'] if near else 0}) on the first {a.eval_images} test images"
        )
    atomic_write_json(res_path, out)
    plot_curves(out, run_dir / "psnr_vs_time.png")
    print(f"jax final: {summary}")
    print(f"wrote {res_path}")


if __name__ == "__main__":
    main()
