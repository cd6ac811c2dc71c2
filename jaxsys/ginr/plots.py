"""GINR's pictures: reconstructions next to their originals with a super-resolved rendering, and the
PSNR-vs-training-time curve of a run (matplotlib, imported only when a PNG is drawn)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.ginr import model as gm
from jaxsys.train.io import save_figure


def _render(params, images, mc: gm.GinrConfig, scale: int):
    return gm.render(params, images, mc, scale)


render = jax.jit(_render, static_argnames=("mc", "scale"))


def _render_1x_2x(params, images, mc: gm.GinrConfig):
    """Full-grid reconstruction and 2x rendering from one encoding (one compile for both)."""
    lp = gm.encode(params, images, mc)
    B, S = images.shape[0], mc.image_size
    out = []
    for scale in (1, 2):
        R = S * scale
        coords = jnp.broadcast_to(gm.pixel_grid(R), (B, R * R, 2))
        out.append(gm.decode(params, lp, coords, mc).reshape(B, R, R, 3))
    return tuple(out)


render_1x_2x = jax.jit(_render_1x_2x, static_argnames=("mc",))


def render_1x_sx(params: dict, images: np.ndarray, mc: gm.GinrConfig, scale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Full-grid reconstructions [B, S, S, 3] and renderings at `scale` times the resolution of float
    images in [0, 1] (scale 2 shares one encoding and one compile with the training PNGs)."""
    gm.check_scale(scale, max_scale=16)
    gm.check_images(images, mc, "render")
    x = jnp.asarray(images)
    if scale == 2:
        return tuple(map(np.asarray, render_1x_2x(params, x, mc)))
    return np.asarray(render(params, x, mc, 1)), np.asarray(render(params, x, mc, scale))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_reconstructions(
    params: dict,
    images_u8: np.ndarray,
    mc: gm.GinrConfig,
    path: Path,
    n: int = 8,
    scale: int = 2,
    rendered: tuple | None = None,
) -> Path:
    """PNG grid: rows original / reconstruction / super-resolved rendering (`scale` x), for n images
    (`rendered`: render_1x_sx's output for these n images, if the caller has it already)."""
    plt = _pyplot()
    x = np.asarray(images_u8[:n], np.float32) / 255.0
    gm.check_images(x, mc, "save_reconstructions")
    rec, sr = render_1x_sx(params, x, mc, scale) if rendered is None else rendered
    n = len(x)
    fig, ax = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        p = float(-10.0 * np.log10(max(np.mean((rec[j] - x[j]) ** 2), 1e-12)))
        for r, (img, title) in enumerate(((x[j], "original"), (rec[j], f"{p:.1f} dB"), (sr[j], f"{scale}x"))):
            ax[r, j].imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax[r, j].set_title(title, fontsize=8)
            ax[r, j].axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def save_curve(records: list[dict], path: Path, title: str = "") -> Path:
    """Test PSNR (full grid) and train-batch PSNR (sampled pixels) against training seconds."""
    plt = _pyplot()
    ev = [r for r in records if "test_psnr" in r]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["train_seconds"] for r in ev], [r["test_psnr"] for r in ev], "o-", label="test (full grid)")
    tr = [r for r in records if "train_psnr" in r]
    if tr:
        ax.plot(
            [r["train_seconds"] for r in tr],
            [r["train_psnr"] for r in tr],
            alpha=0.4,
            label="train batch (sampled pixels)",
        )
    ax.set_xlabel("training time [s]")
    ax.set_ylabel("PSNR [dB]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def save_run_plots(params: dict, test_images: np.ndarray, mc: gm.GinrConfig, run_dir: Path) -> None:
    """reconstructions.png (test images) and psnr_curve.png (from run_dir/metrics.jsonl) of a run."""
    from jaxsys.train import read_metrics

    save_reconstructions(params, test_images, mc, Path(run_dir) / "reconstructions.png")
    save_curve(
        read_metrics(Path(run_dir) / "metrics.jsonl"),
        Path(run_dir) / "psnr_curve.png",
        f"Mamba-GINR dim={mc.dim} M={mc.num_lp} depth={mc.depth}",
    )
