"""Training Mamba-GINR: jitted step, AdamW with warmup + cosine, gradient accumulation, optional
bfloat16 compute on float32 master weights, orbax checkpoint/resume, full-grid test PSNR, PNGs.

Loss: mean over images, sampled pixels and channels of (rgb_pred - rgb)^2.
PSNR of an image: -10 log10(mean squared error over its pixels and channels), images in [0, 1];
reported PSNR = mean over images.
"""

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsys.errors import ConfigError, DataError
from jaxsys.ginr import data as gdata
from jaxsys.ginr import model as gm
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
from jaxsys.train.io import save_figure


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # images per micro-batch
    num_sample_coords: int = 512  # random pixels per image per step; 0 = full grid
    steps: int = 2000  # micro-batch steps (optimizer updates = steps // accum_steps)
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 100  # linear warmup (in optimizer updates)
    final_lr_frac: float = 0.05  # cosine decays to final_lr_frac * lr
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # global-norm clipping (0 = off)
    accum_steps: int = 1  # micro-batches per optimizer update (optax.MultiSteps)
    bf16: bool = False  # bfloat16 compute, float32 master weights and optimizer state
    seed: int = 0  # init, shuffling and pixel sampling
    eval_every: int = 200  # steps between PSNR-vs-time evaluations (0 = only at the end)
    eval_images: int = 256  # test images in each periodic evaluation
    final_eval_images: int = 0  # test images in the final evaluation (0 = all)
    ckpt_every: int = 500  # steps between checkpoints (0 = only at the end)
    max_seconds: float = 0.0  # stop after this much training time (0 = no budget)
    prefetch: int = 4  # batches prepared ahead by the input thread
    stop_at: int = 0  # stop after this step (0 = steps), e.g. to split a run for resume

    def validate(self) -> "TrainConfig":
        for name in ("batch_size", "steps", "accum_steps", "prefetch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.num_sample_coords < 0 or self.warmup_steps < 0:
            raise ConfigError("TrainConfig: lr must be > 0, num_sample_coords and warmup_steps >= 0")
        return self


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    updates = max(tc.steps // tc.accum_steps, 1)
    warm = min(tc.warmup_steps, max(updates - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(
        0.0, tc.lr, warm, max(updates, warm + 1), end_value=tc.lr * tc.final_lr_frac
    )
    tx = optax.adamw(sched, weight_decay=tc.weight_decay)
    if tc.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(tc.grad_clip), tx)
    if tc.accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=tc.accum_steps)
    return tx


def init_state(key: jax.Array, mc: gm.GinrConfig, tc: TrainConfig) -> dict:
    params = gm.init(key, mc)
    return {"params": params, "opt_state": _opt_init(params, step_config(tc)), "step": jnp.zeros((), jnp.int32)}


# one compile for the optimizer state (op by op, every zeros_like of a new leaf shape compiled apart)
_opt_init = jax.jit(lambda params, tc: make_optimizer(tc).init(params), static_argnums=1)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def loss_fn(params: dict, batch: dict, mc: gm.GinrConfig, bf16: bool = False):
    """(mean squared error, per-image mse [B]) of the predictions at the batch's coordinates."""
    images = batch["images"]
    if bf16:
        params, images = _cast(params, jnp.bfloat16), images.astype(jnp.bfloat16)
    pred = gm.decode(params, gm.encode(params, images, mc), batch["coords"], mc).astype(jnp.float32)
    err = (pred - batch["targets"]) ** 2
    per_image = err.mean(axis=(1, 2))
    return per_image.mean(), per_image


def psnr(mse):
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


def _train_step(state: dict, batch: dict, mc: gm.GinrConfig, tc: TrainConfig):
    (loss, per_image), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, mc, tc.bf16)
    updates, opt_state = make_optimizer(tc).update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new, {"loss": loss, "psnr": psnr(per_image).mean()}


def step_config(tc: TrainConfig) -> TrainConfig:
    """The fields the jitted step depends on (others reset), so runs that differ only in logging,
    evaluation or budget share one compiled step."""
    return dataclasses.replace(
        tc,
        seed=0,
        eval_every=0,
        eval_images=0,
        final_eval_images=0,
        ckpt_every=0,
        max_seconds=0.0,
        prefetch=1,
        stop_at=0,
    )


train_step = jax.jit(_train_step, static_argnames=("mc", "tc"), donate_argnames=("state",))


def _reconstruct(params, images, mc: gm.GinrConfig, scale: int):
    return gm.render(params, images, mc, scale)


reconstruct = jax.jit(_reconstruct, static_argnames=("mc", "scale"))


def _reconstruct_1x_2x(params, images, mc: gm.GinrConfig):
    """Full-grid reconstruction and 2x rendering from one encoding (one compile for both)."""
    lp = gm.encode(params, images, mc)
    B, S = images.shape[0], mc.image_size
    out = []
    for scale in (1, 2):
        R = S * scale
        coords = jnp.broadcast_to(gm.pixel_grid(R), (B, R * R, 2))
        out.append(gm.decode(params, lp, coords, mc).reshape(B, R, R, 3))
    return tuple(out)


reconstruct_1x_2x = jax.jit(_reconstruct_1x_2x, static_argnames=("mc",))


def check_batch(batch: dict, mc: gm.GinrConfig) -> None:
    """Shapes and coordinate range, before the jitted step traces them."""
    gm.check_images(batch["images"], mc, "batch images")
    gm.check_coords(batch["coords"], "batch coords")
    B, N = batch["coords"].shape[:2]
    if batch["targets"].shape != (B, N, 3):
        raise DataError(f"batch targets: expected [{B}, {N}, 3], got {batch['targets'].shape}")


def evaluate(params: dict, images_u8: np.ndarray, mc: gm.GinrConfig, batch_size: int = 100) -> dict:
    """Full-grid reconstruction of every image: mean PSNR over images and mean MSE."""
    if images_u8.ndim != 4 or images_u8.shape[1:] != (mc.image_size, mc.image_size, mc.channels):
        raise DataError(
            f"evaluate: images must be [N, {mc.image_size}, {mc.image_size}, {mc.channels}], got {images_u8.shape}"
        )
    ps, ms = [], []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i : i + batch_size]
        n = len(x)
        if n < batch_size and i > 0:  # pad the last batch to the compiled shape
            x = np.concatenate([x, np.repeat(x[-1:], batch_size - n, 0)])
        xf = x.astype(np.float32) / 255.0  # host-side arithmetic: no small per-op compiles
        rec = np.asarray(reconstruct(params, jnp.asarray(xf), mc, 1))
        mse = np.mean((rec.astype(np.float64) - xf) ** 2, axis=(1, 2, 3))[:n]
        ms.append(mse)
        ps.append(-10.0 * np.log10(np.maximum(mse, 1e-12)))
    ms, ps = np.concatenate(ms), np.concatenate(ps)
    return {"psnr": float(ps.mean()), "mse": float(ms.mean()), "images": int(len(ps))}


def render_1x_sx(params: dict, images: np.ndarray, mc: gm.GinrConfig, scale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Full-grid reconstructions [B, S, S, 3] and renderings at `scale` times the resolution of float
    images in [0, 1] (scale 2 shares one encoding and one compile with the training PNGs)."""
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 16:
        raise ConfigError(f"scale must be an int in [1, 16], got {scale!r}")
    x = jnp.asarray(images)
    if scale == 2:
        return tuple(map(np.asarray, reconstruct_1x_2x(params, x, mc)))
    return np.asarray(reconstruct(params, x, mc, 1)), np.asarray(reconstruct(params, x, mc, scale))


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(images_u8[:n], np.float32) / 255.0
    gm.check_images(x, mc, "save_reconstructions")
    rec, sr = render_1x_sx(params, x, mc, scale) if rendered is None else rendered
    n = len(x)
    fig, ax = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        p = float(-10.0 * np.log10(max(np.mean((rec[j] - x[j]) ** 2), 1e-12)))
        for r, (img, title) in enumerate(
            ((np.asarray(x[j]), "original"), (rec[j], f"{p:.1f} dB"), (sr[j], f"{scale}x"))
        ):
            ax[r, j].imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax[r, j].set_title(title, fontsize=8)
            ax[r, j].axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def load_run(run_dir: str | Path) -> tuple[dict, gm.GinrConfig, int]:
    """(params, model config, step) of the latest checkpoint of a `jaxsys ginr train` run directory."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{run_dir}: no config.json here (not a `jaxsys ginr train` run directory)")
    rec = json.loads(cfg_path.read_text())
    try:
        mc = gm.GinrConfig(**rec["model"]).validate()
        tc = TrainConfig(**rec["train"]).validate()
    except (KeyError, TypeError) as e:
        raise DataError(f"{cfg_path}: not a GINR run config ({type(e).__name__}: {e})") from None
    if not (run_dir / "ckpt").is_dir():
        raise DataError(f"{run_dir}: no checkpoint yet (ckpt/ is missing)")
    with Checkpointer(run_dir / "ckpt") as ckpt:
        if ckpt.latest_step() is None:
            raise DataError(f"{run_dir}: no checkpoint yet (ckpt/ is empty)")
        state, _ = ckpt.restore(like=init_state(jax.random.PRNGKey(0), mc, tc))
    return state["params"], mc, int(state["step"])


def save_curve(records: list[dict], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


class StepClock:
    """Training time of a loop (`train`, `jaxsys.ginr.sharded.train_sharded`): the first step of a
    (re)started run compiles and is timed apart, as compile_seconds. `newest_state` is the state of
    the latest dispatched step (timed_step sets it before waiting), what Ctrl-C saves."""

    def __init__(self, train_seconds: float = 0.0, state=None):
        self.train_seconds = train_seconds
        self.compile_seconds: float | None = None
        self.newest_state = state

    def add(self, dt: float) -> None:
        if self.compile_seconds is None:
            self.compile_seconds = dt
        else:
            self.train_seconds += dt


def timed_step(
    step_fn: Callable[[], tuple], clock: StepClock, step: int, batch_size: int, fetch: Callable = np.asarray
) -> tuple[dict, dict]:
    """Runs `step_fn() -> (state, {"loss", "psnr"})` as step `step + 1`, timed up to the host copy of
    its loss (`fetch`: the sync), and returns (state, its metrics record). Raises DataError when the
    loss is not finite."""
    t0 = time.perf_counter()
    state, m = step_fn()
    clock.newest_state = state  # dispatched, not yet run: valid even if Ctrl-C hits while we wait
    loss = float(fetch(m["loss"]))
    dt = time.perf_counter() - t0
    clock.add(dt)
    step += 1
    if not math.isfinite(loss):
        raise DataError(f"training diverged at step {step}: loss = {loss}")
    return state, {
        "step": step,
        "loss": loss,
        "train_psnr": float(fetch(m["psnr"])),
        "images_per_s": batch_size / dt,
        "train_seconds": clock.train_seconds,
    }


def save_run_plots(params: dict, test_images: np.ndarray, mc: gm.GinrConfig, run_dir: Path) -> None:
    """reconstructions.png (test images) and psnr_curve.png (from run_dir/metrics.jsonl) of a run."""
    from jaxsys.train import read_metrics

    save_reconstructions(params, test_images, mc, run_dir / "reconstructions.png")
    save_curve(
        read_metrics(run_dir / "metrics.jsonl"),
        run_dir / "psnr_curve.png",
        f"Mamba-GINR dim={mc.dim} M={mc.num_lp} depth={mc.depth}",
    )


# model-config fields that only choose how the same maths is computed: they may change on resume
NUMERICS_FIELDS = ("scan_mode", "scan_chunk", "scan_checkpoint", "fuse_directions", "matmul_dtype")


def _resume_config_problem(run_dir: Path, mc: gm.GinrConfig) -> str | None:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())["model"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{path}: unreadable run config ({e}); use a fresh run directory"
    diff = {
        k: (saved[k], v)
        for k, v in dataclasses.asdict(mc).items()
        if k not in NUMERICS_FIELDS and k in saved and saved[k] != v
    }
    if not diff:
        return None
    what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
    return (
        f"{run_dir} holds a run of another model config ({what}); resume it with the same config "
        f"or use a fresh run directory"
    )


def check_resume_config(run_dir: Path, mc: gm.GinrConfig, ckpt: Checkpointer | None = None) -> None:
    """Before restoring run_dir/ckpt: raise ConfigError naming the fields when the run was started
    with a model config of other parameter shapes or maths (everything except NUMERICS_FIELDS), so a
    mistaken --config or --dim gives this message instead of an orbax shape error. `ckpt` (the open
    checkpointer) is closed before raising."""
    problem = _resume_config_problem(run_dir, mc)
    if problem is not None:
        if ckpt is not None:
            ckpt.close()
        raise ConfigError(problem)


def train(
    mc: gm.GinrConfig,
    tc: TrainConfig,
    train_images: np.ndarray,
    test_images: np.ndarray,
    run_dir: Path,
    log: Callable = print,
    progress: bool = True,
) -> dict:
    """Train (resuming from run_dir/ckpt if present); returns the summary written to summary.json."""
    mc.validate()
    tc.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, x in (("train", train_images), ("test", test_images)):
        if x.ndim != 4 or x.shape[1:] != (mc.image_size, mc.image_size, mc.channels):
            raise DataError(
                f"{name} images must be [N, {mc.image_size}, {mc.image_size}, "
                f"{mc.channels}] for this config, got {x.shape}"
            )
    state = init_state(jax.random.PRNGKey(tc.seed), mc, tc)
    step_key = step_config(tc)
    ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=2)
    train_seconds, start = 0.0, 0
    if ckpt.latest_step() is not None:
        check_resume_config(run_dir, mc, ckpt)
        state, meta = ckpt.restore(like=state)
        start, train_seconds = int(state["step"]), float(meta.get("train_seconds", 0.0))
        log(f"resumed from step {start} ({train_seconds:.0f}s of training)")
    # one canonical form (plain, non-weak-typed arrays) for fresh and restored states, so a resumed run
    # reuses the compiled step instead of tracing it again
    state = jax.tree_util.tree_map(lambda a: jnp.array(np.asarray(a)), state)
    atomic_write_json(
        run_dir / "config.json",
        {
            "model": dataclasses.asdict(mc),
            "train": dataclasses.asdict(tc),
            "num_params": gm.num_params(state["params"]),
        },
    )
    eval_imgs = test_images[: tc.eval_images]
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    records: list[dict] = []
    batches = gdata.Batches(train_images, tc.batch_size, tc.num_sample_coords, tc.seed, start, tc.prefetch)
    bar = Progress(total=tc.steps, desc="ginr", initial=start, disable=not progress)
    clock = StepClock(train_seconds, state)
    step = start
    try:
        last = tc.stop_at or tc.steps
        while step < min(last, tc.steps) and not (tc.max_seconds and train_seconds >= tc.max_seconds):
            batch = next(batches)
            if clock.compile_seconds is None:
                check_batch(batch, mc)
            state, rec = timed_step(lambda: train_step(state, batch, mc, step_key), clock, step, tc.batch_size)
            step, loss, train_seconds = rec["step"], rec["loss"], clock.train_seconds
            bar.set(loss=loss, psnr=rec["train_psnr"], img_s=round(rec["images_per_s"], 1))
            bar.update()
            if tc.eval_every and step % tc.eval_every == 0:
                rec.update({f"test_{k}": v for k, v in evaluate(state["params"], eval_imgs, mc).items()})
                log(f"step {step}: test PSNR {rec['test_psnr']:.2f} dB ({train_seconds:.0f}s)")
            metrics.write(**rec)
            records.append(rec)
            if tc.ckpt_every and step % tc.ckpt_every == 0:
                ckpt.save(step, state, meta={"train_seconds": train_seconds})
        bar.close()
        if ckpt.latest_step() != step:
            ckpt.save(step, state, meta={"train_seconds": train_seconds})
        final_imgs = test_images if tc.final_eval_images == 0 else test_images[: tc.final_eval_images]
        t0 = time.perf_counter()
        final = evaluate(state["params"], final_imgs, mc)
        eval_s = time.perf_counter() - t0
        rec = {
            "step": step,
            "train_seconds": train_seconds,
            **{f"test_{k}": v for k, v in final.items()},
            "final": True,
        }
        metrics.write(**rec)
        records.append(rec)
        steady = [r["images_per_s"] for r in records if "images_per_s" in r][1:]
        summary = {
            "steps": step,
            "train_seconds": round(train_seconds, 1),
            "compile_seconds": round(clock.compile_seconds or 0.0, 1),
            "images_per_s_median": round(float(np.median(steady)), 1) if steady else None,
            "final_test_psnr": round(final["psnr"], 2),
            "final_test_images": final["images"],
            "final_eval_seconds": round(eval_s, 1),
            "num_params": gm.num_params(state["params"]),
        }
        save_run_plots(state["params"], test_images, mc, run_dir)
        atomic_write_json(run_dir / "summary.json", summary)
        return summary
    except KeyboardInterrupt:
        bar.close()
        save_on_interrupt(ckpt, clock.newest_state, start, {"train_seconds": clock.train_seconds}, log)
        raise
    finally:
        batches.close()
        metrics.close()
        ckpt.close()


def save_on_interrupt(ckpt: Checkpointer, state: dict, start: int, meta: dict, log: Callable) -> None:
    """Ctrl-C: checkpoint the newest state (waiting for its step to finish), unless it is the one on
    disk already or its buffers are gone (donated to a step that never returned)."""
    try:
        if any(a.is_deleted() for a in jax.tree_util.tree_leaves(state)):
            log("interrupted: the newest state was lost mid-step; the last checkpoint stands")
            return
        jax.block_until_ready(state)
        step = int(state["step"])
        if step > start and ckpt.latest_step() != step:
            ckpt.save(step, state, meta=meta)
            log(f"interrupted: checkpoint saved at step {step}")
    except Exception as e:  # never mask the interrupt; the periodic checkpoints remain
        log(f"interrupted: could not save a checkpoint ({type(e).__name__}: {e})")
