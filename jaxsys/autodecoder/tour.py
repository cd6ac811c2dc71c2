"""Tour stage: train the auto-decoder (microbatch rule) on circle / box / triangle, report per-shape
IoU, throughput and a test-time inferred new shape; PNGs and JSON under run_dir."""

import dataclasses
from pathlib import Path

from jaxsys.autodecoder.infer import InferConfig
from jaxsys.autodecoder.train import TrainConfig, train


def run_stage(run_dir: Path, quick: bool) -> dict:
    run_dir = Path(run_dir)
    if quick:
        cfg = dataclasses.replace(TrainConfig(), steps=200, steps_per_call=200, eval_res=48)
        icfg = InferConfig(steps=50, batch_size=256)
    else:
        cfg = dataclasses.replace(TrainConfig(), steps=16_000, steps_per_call=1000, eval_res=128)
        icfg = InferConfig(steps=400)
    s = train(cfg, run_dir, progress=not quick, log=lambda *a: None, infer_shape="rounded_box", infer_cfg=icfg)
    return {
        "samples": s["samples"],
        "samples_per_s": round(s["samples_per_s"]),
        "min_iou": min(s["iou"].values()),
        "contour_abs_sdf": round(max(s["contour_abs_sdf"].values()), 5),
        "inferred_iou": s["inferred"]["iou"],
    }
