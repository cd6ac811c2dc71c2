"""Plot a resumable run of experiments/ginr_recipes.py (--run-dir): test PSNR (1,000 class-balanced test
images, full grid) against training CPU-minutes and training wall-minutes, log time axis.

    PYTHONPATH=$PWD python experiments/ginr_long_plot.py /work/main/runs/ginr-long
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(run_dir: str) -> None:
    run = Path(run_dir)
    pts = [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines() if x.strip()]
    pts = sorted({p["cpu_s"]: p for p in pts}.values(), key=lambda p: p["cpu_s"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["cpu_s"] / 60 for p in pts], [p["test_psnr"] for p in pts], "o-", label="vs training CPU-minutes")
    ax.plot(
        [p["wall_s"] / 60 for p in pts],
        [p["test_psnr"] for p in pts],
        "s--",
        alpha=0.6,
        label="vs training wall-minutes",
    )
    ax.set_xscale("log")
    ax.set_xlabel("training time [min] (compile and evaluation excluded)")
    ax.set_ylabel("test PSNR [dB], 1,000 balanced test images")
    ax.set_title(
        f"Mamba-GINR long run: {pts[-1]['test_psnr']:.2f} dB at {pts[-1]['cpu_s'] / 60:.0f} CPU-min", fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "psnr_vs_time.png", dpi=110)
    print(run / "psnr_vs_time.png")


if __name__ == "__main__":
    main(sys.argv[1])
