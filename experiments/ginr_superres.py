"""2x super-resolution with Mamba-GINR against bicubic (issue 22), on --images fixed test images spread over
the classes (`ginr_recipes.eval_subset`: every 10th test image for 1,000).

Low-resolution input: each 32x32 test image box-averaged over 2x2 blocks (area downsampling) to 16x16,
rounded to uint8. Target: the real 32x32 image. PSNR = mean over images of -10 log10 MSE, [0, 1] scale.

  - bicubic: PIL Image.resize((32, 32), Image.BICUBIC) of the uint8 16x16 image;
  - model16 (--model16 PICKLE): a model with image_size=16 whose encoder read box-downsampled 16x16
    training images, trained either against those 16x16 images (`--set downsample=2`) or against the
    real 32x32 image at 32x32 coordinates (`--set sr=2`, super-resolution training), given the 16x16
    input and queried at the 32x32 pixel centres (`render(..., scale=2)`);
  - model32-on-bicubic (--model32 PICKLE): the usual 32x32 model, given the bicubic 32x32 upsampling as
    input and rendered on the 32x32 grid (what a user of a 32x32-input model can do with a 16x16 image).

    PYTHONPATH=$PWD python experiments/ginr_recipes.py --name sr2_cpu --config cpu --cpu-min 7 --set image_size=16 \
        --set patch_size=2 --set sr=2 --set coord_jitter=0.5 --save-params runs/confirm/sr2_cpu.pkl
    PYTHONPATH=$PWD python experiments/ginr_superres.py --model16 runs/confirm/sr2_cpu.pkl \
        --model32 runs/ginr-long/params_final.pkl
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import numpy as np  # noqa: E402
from ginr_grid import FIXED, bicubic, load, render, save_png  # noqa: E402
from ginr_recipes import box_downsample, eval_subset  # noqa: E402
from PIL import Image  # noqa: E402

from jaxsys.ginr import data as gd  # noqa: E402


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2, axis=(1, 2, 3))
    return float(np.mean(-10 * np.log10(np.maximum(mse, 1e-12))))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model16", default="")
    ap.add_argument("--model32", default="")
    ap.add_argument("--images", type=int, default=1000)
    a = ap.parse_args(argv)
    test_x, _ = gd.load_cifar10(
        ROOT.parent / "shared" / "data" / "cifar10-jpeg", "test", cache_dir=ROOT / "runs" / "cache"
    )
    hr_u8 = eval_subset(test_x, a.images)
    hr = hr_u8.astype(np.float32) / 255.0
    lr_u8 = box_downsample(hr_u8, 2)
    bic_u8 = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BICUBIC)) for im in lr_u8])
    bic = bic_u8.astype(np.float32) / 255.0
    near = np.repeat(np.repeat(lr_u8, 2, 1), 2, 2).astype(np.float32) / 255.0
    out = {"images": a.images, "downsample": "2x2 box average, rounded to uint8", "bicubic": psnr(bic, hr)}
    out["nearest"] = psnr(near, hr)
    F = [i for i in FIXED if i < a.images]
    rows = [("real 32x32", hr[F]), ("16x16 input (nearest)", near[F]), (f"bicubic {out['bicubic']:.2f} dB", bic[F])]
    if a.model16:
        p16, mc16 = load(a.model16)
        lr = lr_u8.astype(np.float32) / 255.0
        sr = np.clip(render(p16, mc16, lr, 2), 0, 1)
        out["model16_2x"] = psnr(sr, hr)
        rec16 = np.clip(render(p16, mc16, lr, 1), 0, 1)
        out["model16_1x_on_16x16"] = psnr(rec16, lr)
        # the model's own 16x16 reconstruction upsampled by bicubic: what its 2x query adds over interpolation
        out["bicubic_of_model16_1x"] = psnr(np.clip(bicubic(rec16, 32), 0, 1), hr)
        out["model16_pickle"] = a.model16
        rows.append((f"model16 2x {out['model16_2x']:.2f} dB", sr[F]))
    if a.model32:
        p32, mc32 = load(a.model32)
        rb = np.clip(render(p32, mc32, bic, 1), 0, 1)
        out["model32_on_bicubic"] = psnr(rb, hr)
        out["model32_1x_on_real_32"] = psnr(np.clip(render(p32, mc32, hr, 1), 0, 1), hr)
        out["model32_pickle"] = a.model32
        rows.append((f"model32 on bicubic {out['model32_on_bicubic']:.2f} dB", rb[F]))
    res = ROOT / "experiments" / "results"
    (res / "ginr_superres.json").write_text(json.dumps(out, indent=1))
    save_png(rows, res / "ginr_superres.png")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
