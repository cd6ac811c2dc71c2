"""PNG renderings (matplotlib Agg): original vs reconstruction per shape, SDF heatmap, hard and soft
masks, zero contour over the analytic one, loss / mean |z| curves, latent interpolation grid."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsys.autodecoder import recon  # noqa: E402
from jaxsys.autodecoder.shapes import DOMAIN  # noqa: E402
from jaxsys.errors import ConfigError  # noqa: E402
from jaxsys.train.io import save_figure  # noqa: E402

EXTENT = (-DOMAIN, DOMAIN, -DOMAIN, DOMAIN)


def shape_panels(axes, y: np.ndarray, true_sdf: np.ndarray, beta: float, tau: float, title: str):
    """Fill 5 axes: analytic mask, predicted mask, SDF heatmap, soft mask, contours."""
    if not tau > 0:
        raise ConfigError(f"soft mask temperature tau must be > 0, got {tau}")
    sdf = beta * y
    a = np.linspace(-DOMAIN, DOMAIN, y.shape[0])
    kw = dict(origin="lower", extent=EXTENT)
    axes[0].imshow(true_sdf < 0, cmap="gray_r", **kw)
    axes[0].set_title(f"{title}: analytic")
    axes[1].imshow(sdf < 0, cmap="gray_r", **kw)
    axes[1].set_title("reconstruction")
    lim = beta
    axes[2].imshow(sdf, cmap="RdBu", vmin=-lim, vmax=lim, **kw)
    axes[2].set_title("SDF heatmap (beta*y)")
    axes[3].imshow(np.asarray(recon.soft_mask(sdf, tau)), cmap="gray_r", vmin=0, vmax=1, **kw)
    axes[3].set_title(f"soft mask tau={tau:g}")
    axes[4].contour(a, a, true_sdf, levels=[0], colors="k", linewidths=2)
    axes[4].contour(a, a, sdf, levels=[0], colors="r", linewidths=1)
    axes[4].set_aspect("equal")
    axes[4].set_xlim(-DOMAIN, DOMAIN)
    axes[4].set_ylim(-DOMAIN, DOMAIN)
    axes[4].set_title("zero sets: analytic k, pred r")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def plot_reconstructions(
    params, Z, names, mcfg, beta: float, res: int = 128, tau: float = 0.02, metrics: dict | None = None
):
    fig, axes = plt.subplots(len(names), 5, figsize=(15, 3.1 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        y = np.asarray(recon.render_rows(params, Z[i], mcfg, res))
        title = name if not metrics else f"{name} IoU={metrics[name]:.3f}"
        shape_panels(axes[i], y, np.asarray(recon.analytic(name, res)), beta, tau, title)
    fig.tight_layout()
    return fig


def plot_curves(records: list[dict]):
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    s = [r["samples"] for r in records]
    ax[0].plot(s, [r["loss_burst"] for r in records])
    ax[0].set_yscale("log")
    ax[0].set_xlabel("samples")
    ax[0].set_title("mean per-sample loss (burst)")
    ax[1].plot(s, [r["mean_abs_z"] for r in records])
    ax[1].set_xlabel("samples")
    ax[1].set_title("mean |z|")
    fig.tight_layout()
    return fig


def plot_interpolation(params, Z, names, mcfg, n: int = 7, res: int = 96):
    from jaxsys.autodecoder.infer import interpolate

    pairs = [(i, (i + 1) % len(names)) for i in range(len(names))] if len(names) > 2 else [(0, 1)]
    fig, axes = plt.subplots(len(pairs), n, figsize=(1.8 * n, 1.9 * len(pairs)), squeeze=False)
    for r, (i, j) in enumerate(pairs):
        imgs = np.asarray(interpolate(params, Z[i], Z[j], mcfg, n, res))
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="RdBu", vmin=-1, vmax=1, origin="lower", extent=EXTENT)
            ax.contour(
                np.linspace(-DOMAIN, DOMAIN, res),
                np.linspace(-DOMAIN, DOMAIN, res),
                imgs[c],
                levels=[0],
                colors="k",
                linewidths=1,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{names[i]}->{names[j]}", fontsize=8)
            if r == 0:
                ax.set_title(f"a={c / (n - 1):.2f}", fontsize=8)
    fig.tight_layout()
    return fig


def render_all(run_dir: Path, params, Z, cfg, metrics_path: Path | None = None, iou: dict | None = None) -> list[str]:
    """Write reconstructions.png, interpolation.png and (with metrics) curves.png into run_dir."""
    from jaxsys.train.metrics import read_metrics

    run_dir = Path(run_dir)
    names = list(cfg.sampler.shapes)
    out = []
    fig = plot_reconstructions(params, Z, names, cfg.model, cfg.sampler.beta, cfg.eval_res, metrics=iou)
    save_figure(fig, run_dir / "reconstructions.png", dpi=80)
    plt.close(fig)
    out.append("reconstructions.png")
    if len(names) > 1:
        fig = plot_interpolation(params, Z, names, cfg.model)
        save_figure(fig, run_dir / "interpolation.png", dpi=80)
        plt.close(fig)
        out.append("interpolation.png")
    if metrics_path is not None and Path(metrics_path).exists():
        recs = read_metrics(metrics_path)
        if recs:
            fig = plot_curves(recs)
            save_figure(fig, run_dir / "curves.png", dpi=80)
            plt.close(fig)
            out.append("curves.png")
    return out


def plot_inferred(
    params, z, shape: str, mcfg, beta: float, res: int, path: Path, iou_value: float | None = None
) -> Path:
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.1), squeeze=False)
    y = np.asarray(recon.render_rows(params, z, mcfg, res))
    title = f"{shape} (inferred)" + (f" IoU={iou_value:.3f}" if iou_value is not None else "")
    shape_panels(axes[0], y, np.asarray(recon.analytic(shape, res)), beta, 0.02, title)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return Path(path)
