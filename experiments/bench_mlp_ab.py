"""Paired A/B of the two JAX MLP train steps (784-512-512-10, float32): (a) hand-derived backward + hand
Adam against (b) jax.value_and_grad + optax.adam, one jitted step per call, as in bench_mlp.py.

On a VM whose speed drifts by more than the difference being measured, medians of separate blocks
are not enough. This script alternates the two steps in adjacent 0.4 s blocks (bench_mlp.interleaved:
the order flips every round), takes the per-round ratio (a)/(b), and reports its median and how many rounds (a) was ahead.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_mlp_ab.py --batches 64,1024 --rounds 25
    (writes runs/bench/mlp_ab.json, or --out)

With --vs-torch the pairing is against PyTorch eager instead (same shapes, --threads torch threads):
(a) one step per call and (a') `train_steps` with 50 steps per call (what `jaxsys mlp train` runs),
each over the adjacent torch block of the same round; reports the median ratios and the rounds >= 2x.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_mlp_ab.py --vs-torch --batches 64 --rounds 25 \
        --out runs/bench/mlp_vs_torch.json
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_mlp  # noqa: E402


def paired(batch: int, rounds: int, seconds: float) -> dict:
    """bench_mlp.interleaved over the two steps (with two methods its rotating order alternates),
    then the ratio (a)/(b) of each round's adjacent blocks."""
    res = bench_mlp.interleaved(
        {
            "hand": bench_mlp.jax_method(batch, "hand", "hand"),
            "autodiff_optax": bench_mlp.jax_method(batch, "autodiff", "optax"),
        },
        rounds,
        seconds,
    )
    ratio = [h / a for h, a in zip(res["hand"]["rates"], res["autodiff_optax"]["rates"])]
    return {
        "batch": batch,
        "rounds": rounds,
        "median_steps_per_s": {k: round(float(v["median_per_s"]), 1) for k, v in res.items()},
        "median_ratio_hand_over_autodiff": round(float(np.median(ratio)), 3),
        "hand_ahead_rounds": int(sum(x > 1 for x in ratio)),
        "ratios": [round(x, 3) for x in ratio],
    }


def paired_vs_torch(batch: int, rounds: int, seconds: float, k: int = 50) -> dict:
    """(a), (a') and torch eager interleaved (rotating order); per-round ratios of each JAX variant over
    torch in the same round."""
    res = bench_mlp.interleaved(
        {
            "hand": bench_mlp.jax_method(batch, "hand", "hand"),
            f"hand_scan{k}": bench_mlp.jax_scan_method(batch, k),
            "torch_eager": bench_mlp.torch_method(batch, False),
        },
        rounds,
        seconds,
    )
    out = {
        "batch": batch,
        "rounds": rounds,
        "median_steps_per_s": {n: round(float(v["median_per_s"]), 1) for n, v in res.items()},
    }
    for name in ("hand", f"hand_scan{k}"):
        ratio = [j / t for j, t in zip(res[name]["rates"], res["torch_eager"]["rates"])]
        out[name + "_over_torch"] = {
            "median": round(float(np.median(ratio)), 3),
            "rounds_at_least_2x": int(sum(x >= 2 for x in ratio)),
            "ratios": [round(x, 3) for x in ratio],
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,1024")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=0.4, help="seconds per timed block")
    ap.add_argument(
        "--vs-torch",
        action="store_true",
        help="pair (a) and (a', 50 steps per call) with torch eager instead of (a) with (b)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads with --vs-torch")
    ap.add_argument("--out", default=str(HERE.parent / "runs" / "bench" / "mlp_ab.json"))
    args = ap.parse_args()
    if args.vs_torch:
        import torch

        torch.set_num_threads(args.threads)
    out = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_start": os.getloadavg(),
        "runs": [],
    }
    if args.vs_torch:
        out["torch_threads"] = args.threads
    for b in (int(s) for s in args.batches.split(",")):
        if args.vs_torch:
            res = paired_vs_torch(b, args.rounds, args.seconds)
            out["runs"].append(res)
            print(
                f"B={b}: steps/s {res['median_steps_per_s']}; "
                + "; ".join(
                    f"{n}: median {res[n]['median']}x, >= 2x in {res[n]['rounds_at_least_2x']}/{args.rounds}"
                    for n in res
                    if n.endswith("_over_torch")
                ),
                flush=True,
            )
            continue
        res = paired(b, args.rounds, args.seconds)
        out["runs"].append(res)
        print(
            f"B={b}: hand {res['median_steps_per_s']['hand']} steps/s, autodiff+optax "
            f"{res['median_steps_per_s']['autodiff_optax']}; per-round ratio median "
            f"{res['median_ratio_hand_over_autodiff']}, hand ahead in {res['hand_ahead_rounds']}/{args.rounds}",
            flush=True,
        )
    from jaxsys.train.io import atomic_write_json

    atomic_write_json(args.out, out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
