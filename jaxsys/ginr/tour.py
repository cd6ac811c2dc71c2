"""Tour stage: train Mamba-GINR briefly on the 20 packaged lossless CIFAR-10 PNGs (no ../shared data)
and report full-grid PSNR on them, with reconstructions and a 2x rendering."""

from pathlib import Path

from jaxsys.ginr import data as gdata
from jaxsys.ginr import model as gm
from jaxsys.ginr import train as gt

# quick stage (also the tests' smoke configuration, so they share compiled steps)
QUICK_MODEL = gm.get_config("fast", dim=16, num_lp=4, depth=1, hidden=8, num_freqs=3)
QUICK_TRAIN = gt.TrainConfig(
    batch_size=10, num_sample_coords=256, steps=30, lr=3e-3, warmup_steps=5, eval_every=0, checkpoint_every=0
)
FULL_MODEL = gm.get_config("cpu")
FULL_TRAIN = gt.TrainConfig(
    batch_size=16,  # the recipe study's best at a fixed CPU budget (BUILD_NOTES, GINR quality)
    num_sample_coords=512,
    steps=300,
    lr=3e-3,
    warmup_steps=20,
    eval_every=40,
    eval_images=20,
    checkpoint_every=0,
    max_seconds=50,
)


def run_stage(run_dir: Path, quick: bool) -> dict:
    x, _ = gdata.load_png20()
    mc, tc = (QUICK_MODEL, QUICK_TRAIN) if quick else (FULL_MODEL, FULL_TRAIN)
    s = gt.train(mc, tc, x, x, Path(run_dir), log=lambda *a: None, progress=False)
    return {
        "config": "tiny" if quick else "cpu",
        "steps": s["steps"],
        "psnr_db": s["final_test_psnr"],
        "img_per_s": s["images_per_s_median"],
        "params": s["num_params"],
    }
