"""Plot resumable runs of experiments/ginr_recipes.py (--run-dir): test PSNR (1,000 class-balanced test
images, full grid) against training CPU-minutes, log time axis. The first run is the long run: its
training wall-minutes are drawn too, and a least-squares line PSNR = a + b log2(CPU-min) through its
points from --fit-from CPU-minutes on gives the dB per doubling and the CPU time to --target dB.

    PYTHONPATH=$PWD python experiments/ginr_long_plot.py runs/ginr-long [runs/confirm/cpu_jit_s0 ...] \\
        --out experiments/results/ginr_long.png
"""

import argparse
import json
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(run: Path) -> list[dict]:
    pts = [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines() if x.strip()]
    return sorted({p["cpu_s"]: p for p in pts}.values(), key=lambda p: p["cpu_s"])


def fit(pts: list[dict], start_min: float, target: float) -> dict:
    """Least squares PSNR = a + b log2(CPU-min) over the points from start_min on."""
    xs = np.array([math.log2(p["cpu_s"] / 60) for p in pts if p["cpu_s"] / 60 >= start_min])
    ys = np.array([p["test_psnr"] for p in pts if p["cpu_s"] / 60 >= start_min])
    b, a = np.polyfit(xs, ys, 1)
    return {"db_per_doubling": float(b), "a": float(a), "cpu_min_to_target": float(2 ** ((target - a) / b))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="run directories; the first is the long run")
    ap.add_argument("--out", default="", help="PNG (default: <first run>/psnr_vs_time.png)")
    ap.add_argument("--fit-from", type=float, default=5.0, help="CPU-minutes")
    ap.add_argument("--target", type=float, default=30.0, help="dB")
    a = ap.parse_args(argv)
    runs = [Path(r) for r in a.runs]
    long = curve(runs[0])
    f = fit(long, a.fit_from, a.target)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [p["cpu_s"] / 60 for p in long]
    ax.plot(x, [p["test_psnr"] for p in long], "o-", label=f"{runs[0].name} vs training CPU-minutes")
    ax.plot([p["wall_s"] / 60 for p in long], [p["test_psnr"] for p in long], "s--", alpha=0.5, label="  vs wall-min")
    xx = np.geomspace(a.fit_from, max(x[-1], f["cpu_min_to_target"]), 50)
    ax.plot(xx, f["a"] + f["db_per_doubling"] * np.log2(xx), ":", color="gray", label="fit (extrapolated)")
    for r in runs[1:]:
        pts = curve(r)
        ax.plot([p["cpu_s"] / 60 for p in pts], [p["test_psnr"] for p in pts], ".-", label=r.name)
    ax.axhline(a.target, color="red", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("training time [min] (compilation and evaluation excluded)")
    ax.set_ylabel("test PSNR [dB], 1,000 balanced test images")
    ax.set_title(
        f"Mamba-GINR: {long[-1]['test_psnr']:.2f} dB at {x[-1]:.0f} CPU-min; "
        f"{f['db_per_doubling']:.2f} dB per doubling; {a.target:.0f} dB at ~{f['cpu_min_to_target']:.0f} CPU-min",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(a.out) if a.out else runs[0] / "psnr_vs_time.png"
    fig.savefig(out, dpi=110)
    print(json.dumps({"png": str(out), "last": long[-1], **f}))


if __name__ == "__main__":
    main()
