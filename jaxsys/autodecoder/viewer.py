"""Interactive viewer (matplotlib) with the reference's keys:

    T  train one burst            B / b  double / halve the micro-batch
    M  mask vs heatmap            S      soft vs hard mask
    [  / ] lower / raise tau      R      refresh

The key logic lives in `Viewer.handle_key(key)` so it runs (and is tested) headless on Agg;
`Viewer.connect()` hooks it to a figure's key_press_event for the interactive window.
"""

import dataclasses

import jax
import numpy as np

from jaxsys.autodecoder import recon
from jaxsys.autodecoder.train import TrainConfig, TrainState, data_keys, init_state, train_step
from jaxsys.errors import ConfigError

MIN_BATCH, MAX_BATCH = 1, 1 << 16
TAU_FACTOR = 1.5


class Viewer:
    def __init__(
        self,
        cfg: TrainConfig,
        key: jax.Array,
        state: TrainState | None = None,
        burst_steps: int = 100,
        res: int = 96,
        tau: float = 0.02,
    ):
        """`key` starts a fresh model (unless `state` is given) and draws the training samples."""
        if cfg.num_seeds != 1:
            raise ConfigError("the viewer shows one seed; use num_seeds=1")
        if not tau > 0:
            raise ConfigError(f"tau must be > 0, got {tau}")
        if burst_steps < 1:
            raise ConfigError(f"burst_steps must be >= 1, got {burst_steps}")
        self.cfg = cfg
        self.state = init_state(key, cfg) if state is None else state
        self.keys = data_keys(key, cfg)
        self.burst_steps = burst_steps
        self.res = res
        self.tau = tau
        self.show_mask = False  # False: SDF heatmap, True: mask
        self.soft = False  # mask style: hard {sdf < 0} or soft sigmoid(-sdf / tau)
        self.last_loss = float("nan")
        self.fig = None
        self.images: list[np.ndarray] = []
        self.status = ""

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    # -- actions -------------------------------------------------------------------------------
    def train_burst(self) -> None:
        self.state, loss, _ = train_step(self.state, self.keys, cfg=self.cfg.step_config(), n_steps=self.burst_steps)
        self.last_loss = float(np.asarray(loss)[-1])

    def set_batch(self, b: int) -> None:
        b = int(min(max(b, MIN_BATCH), MAX_BATCH))
        self.cfg = dataclasses.replace(self.cfg, batch_size=b)

    def compute_images(self) -> list[np.ndarray]:
        beta = self.cfg.sampler.beta
        out = []
        for i in range(len(self.cfg.sampler.shapes)):
            sdf = beta * np.asarray(
                recon.render_rows(self.state.params, self.state.latents[i], self.cfg.model, self.res)
            )
            if not self.show_mask:
                out.append(sdf)
            elif self.soft:
                out.append(np.asarray(recon.soft_mask(sdf, self.tau)))
            else:
                out.append((sdf < 0).astype(np.float32))
        self.images = out
        return out

    def handle_key(self, key: str | None) -> str:
        """Apply one key press; returns the status line. Unknown keys are ignored."""
        if key is None:
            return self.status
        k = key.lower() if key not in ("B", "b") else key
        if k == "t":
            self.train_burst()
        elif key == "B":
            self.set_batch(self.batch_size * 2)
        elif key == "b":
            self.set_batch(self.batch_size // 2)
        elif k == "m":
            self.show_mask = not self.show_mask
        elif k == "s":
            self.soft = not self.soft
        elif k == "[":
            self.tau = self.tau / TAU_FACTOR
        elif k == "]":
            self.tau = self.tau * TAU_FACTOR
        elif k == "r":
            pass
        else:
            return self.status
        self.refresh()
        return self.status

    # -- drawing -------------------------------------------------------------------------------
    def status_line(self) -> str:
        view = ("soft mask" if self.soft else "hard mask") if self.show_mask else "SDF heatmap"
        return (
            f"step {int(np.asarray(self.state.step))}  B={self.batch_size}  "
            f"{self.cfg.sched.name}  loss={self.last_loss:.3g}  view={view}  tau={self.tau:.3g}  "
            "[T train, B/b batch, M mask, S soft, [ ] tau, R refresh]"
        )

    def refresh(self) -> None:
        self.compute_images()
        self.status = self.status_line()
        if self.fig is not None:
            self.draw()

    def make_figure(self):
        import matplotlib.pyplot as plt

        n = len(self.cfg.sampler.shapes)
        self.fig, self.axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
        self.axes = self.axes[0]
        self.draw()
        return self.fig

    def draw(self) -> None:
        from jaxsys.autodecoder.plots import EXTENT

        if not self.images:
            self.compute_images()
            self.status = self.status_line()
        beta = self.cfg.sampler.beta
        for ax, img, name in zip(self.axes, self.images, self.cfg.sampler.shapes):
            ax.clear()
            if self.show_mask:
                ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, origin="lower", extent=EXTENT)
            else:
                ax.imshow(img, cmap="RdBu", vmin=-beta, vmax=beta, origin="lower", extent=EXTENT)
            ax.set_title(name)
            ax.set_xticks([])
            ax.set_yticks([])
        self.fig.suptitle(self.status, fontsize=8)
        self.fig.canvas.draw_idle()

    def connect(self):
        if self.fig is None:
            self.make_figure()
        return self.fig.canvas.mpl_connect("key_press_event", lambda ev: self.handle_key(ev.key))
