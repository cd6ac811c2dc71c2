"""Where the regular grid in Mamba-GINR's 4x renderings comes from (issue 22).

For each parameter pickle written by experiments/ginr_recipes.py (--save-params): render 8 fixed test
images at 4x (128 x 128) and save a PNG (rows: original, nearest-neighbour 4x, the model's 4x), then
measure the pattern on --images test images: the mean amplitude spectrum along x and y of the 4x
rendering minus a smooth version of it (bicubic 4x of the model's own 1x reconstruction), reported
at the periods that would point at a cause:
  - 4 source pixels (16 rendered px; 8 cycles per image): 4x4 patch boundaries (2 px for patch_size 2);
  - 2 source pixels (8 px; 16 cycles): the highest Fourier feature 2^3 * 2 pi (num_freqs 4);
  - 1 source pixel (4 px; 32 cycles): the pixel lattice the network was fitted on.

    PYTHONPATH=$PWD python experiments/ginr_grid.py runs/p/base.pkl runs/p/other.pkl --tag cmp
"""

import argparse
import json
import pickle
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxsys.ginr import data as gd  # noqa: E402

sys.path.insert(0, str(ROOT / "experiments"))
from ginr_recipes import eval_subset  # noqa: E402

from jaxsys.ginr import model as gm  # noqa: E402

FIXED = [0, 100, 200, 300, 400, 500, 600, 700]  # one image of each of 8 classes in the subset


def load(path):
    d = pickle.loads(Path(path).read_bytes())
    return d["params"], gm.GinrConfig(**d["model"])


def bicubic(x: np.ndarray, size: int) -> np.ndarray:
    """float [N, S, S, 3] in [0, 1] -> [N, size, size, 3] by PIL bicubic per channel (mode F)."""
    out = np.empty((len(x), size, size, 3), np.float32)
    for i, im in enumerate(x):
        for c in range(3):
            out[i, :, :, c] = np.asarray(Image.fromarray(im[:, :, c].astype(np.float32), "F").resize((size, size), 3))
    return out


_render = jax.jit(gm.render, static_argnames=("cfg", "scale"))


def render(params, mc, x, scale, bs=50):
    out = []
    for i in range(0, len(x), bs):
        out.append(np.asarray(_render(params, jnp.asarray(x[i : i + bs]), mc, scale)))
    return np.concatenate(out)


def spectrum(residual: np.ndarray) -> np.ndarray:
    """Mean 1-D amplitude spectrum (cycles per image) along x and y of [N, R, R, 3] residuals."""
    r = residual.mean(-1)
    fx = np.abs(np.fft.rfft(r, axis=2)).mean(axis=(0, 1))
    fy = np.abs(np.fft.rfft(r, axis=1)).mean(axis=(0, 2))
    return (fx + fy) / 2


def save_png(rows, path: Path, inch: float = 1.7):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows[0][1])
    fig, ax = plt.subplots(len(rows), n, figsize=(inch * n, (inch + 0.1) * len(rows)), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for j in range(n):
            ax[r, j].imshow(np.clip(imgs[j], 0, 1), interpolation="nearest")
            ax[r, j].axis("off")
        ax[r, 0].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("pickles", nargs="+")
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--tag", default="grid")
    a = ap.parse_args(argv)
    test_x, _ = gd.load_cifar10(
        ROOT.parent / "shared" / "data" / "cifar10-jpeg", "test", cache_dir=ROOT / "runs" / "cache"
    )
    x = eval_subset(test_x, 1000)[: a.images].astype(np.float32) / 255.0
    res_dir = ROOT / "experiments" / "results"
    out = {}
    for pk in a.pickles:
        params, mc = load(pk)
        name = Path(pk).stem
        S = mc.image_size
        xin = x if S == 32 else None
        rec1 = render(params, mc, xin, 1)
        rec4 = render(params, mc, xin, 4)
        smooth = bicubic(rec1, 4 * S)
        spec = spectrum(rec4 - smooth)
        R = 4 * S
        base = np.median(spec[2:])
        picks = {f"period_{p}px_src": float(spec[R // (4 * p)] / base) for p in (4, 2, 1) if R // (4 * p) < len(spec)}
        mse = np.mean((rec1 - xin) ** 2, axis=(1, 2, 3))
        out[name] = {
            "model": {k: getattr(mc, k) for k in ("patch_size", "num_freqs", "dim", "hidden", "num_lp")},
            "psnr_1x": float(np.mean(-10 * np.log10(np.maximum(mse, 1e-12)))),
            "residual_spectrum_peak_over_median": picks,
            "residual_rms": float(np.sqrt(np.mean((rec4 - smooth) ** 2))),
            "residual_spectrum_over_median_cycles_0_40": [round(float(v), 2) for v in (spec / base)[:41]],
        }
        nearest = np.repeat(np.repeat(xin[FIXED], 4, 1), 4, 2)
        save_png(
            [
                ("original (nearest 4x)", nearest),
                (f"{name}: model 4x", rec4[FIXED]),
                ("bicubic 4x of model 1x", smooth[FIXED]),
            ],
            res_dir / f"ginr_grid_{a.tag}_{name}.png",
        )
        crop = rec4[FIXED[:4], :64, :64]  # top-left quarter, enlarged, where a lattice is easy to see
        save_png(
            [(f"{name}: 4x, top-left 64x64 px", np.repeat(np.repeat(crop, 2, 1), 2, 2))],
            res_dir / f"ginr_grid_{a.tag}_{name}_crop.png",
            inch=3.2,
        )
        print(name, json.dumps(out[name]), flush=True)
    (res_dir / f"ginr_grid_{a.tag}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
