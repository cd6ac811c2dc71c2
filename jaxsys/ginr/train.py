"""Training Mamba-GINR: jitted step, AdamW with warmup + cosine, gradient accumulation, optional
bfloat16 compute on float32 master weights, orbax checkpoint/resume, full-grid test PSNR, PNGs.

One loop, always on a device mesh (`jaxsys.train.sharding`; one device is a one-device mesh): images,
coordinates and targets split over 'data'; parameters replicated, or with `fsdp` every large matrix
(and its AdamW moments) split over 'data'. With several processes each one places only its rows of
the batch (batch `s` is pure in (seed, s)), process 0 writes config, metrics, summary and PNGs, and
every process joins the checkpoint writes.

Loss: mean over images, sampled pixels and channels of (rgb_pred - rgb)^2.
PSNR of an image: -10 log10(mean squared error over its pixels and channels), images in [0, 1];
reported PSNR = mean over images.
"""

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxsys.errors import ConfigError, DataError
from jaxsys.ginr import data as gdata
from jaxsys.ginr import model as gm
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
from jaxsys.train import sharding as sh
from jaxsys.train.interrupt import StopOnCtrlC, never_raises, save_on_interrupt
from jaxsys.train.io import load_json


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # images per micro-batch (divisible by the mesh's 'data' axis)
    num_sample_coords: int = 512  # random pixels per image per step; 0 = full grid
    coord_jitter: float = 0.5  # pixels in [0, 0.5]: training coordinates move within their pixel (0.5:
    # anywhere in it), so renderings between pixel centres have no lattice (BUILD_NOTES, GINR quality)
    steps: int = 2000  # micro-batch steps (optimizer updates = steps // accum_steps)
    lr: float = 3e-3  # peak learning rate
    warmup_steps: int = 20  # linear warmup (in optimizer updates)
    final_lr_frac: float = 0.05  # cosine decays to final_lr_frac * lr
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # global-norm clipping (0 = off)
    accum_steps: int = 1  # micro-batches per optimizer update (optax.MultiSteps)
    bf16: bool = False  # bfloat16 compute, float32 master weights and optimizer state
    seed: int = 0  # init, shuffling and pixel sampling
    eval_every: int = 200  # steps between PSNR-vs-time evaluations (0 = only at the end)
    eval_images: int = 256  # test images in each periodic evaluation
    final_eval_images: int = 0  # test images in the final evaluation (0 = all)
    checkpoint_every: int = 500  # steps between checkpoints (0 = only at the end)
    max_seconds: float = 0.0  # stop after this much training time (0 = no budget)
    prefetch: int = 4  # batches prepared ahead by the input thread
    stop_at: int = 0  # stop after this step (0 = steps), e.g. to split a run for resume

    def __post_init__(self):
        for name in ("batch_size", "steps", "accum_steps", "prefetch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        nonneg = ("num_sample_coords", "warmup_steps", "eval_every", "eval_images", "final_eval_images")
        for name in nonneg + ("checkpoint_every", "stop_at"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        gdata.check_coord_jitter(self.coord_jitter)
        if self.eval_every and not self.eval_images:
            raise ConfigError("TrainConfig.eval_images must be > 0 when eval_every is set, got 0")
        for name in ("lr", "final_lr_frac", "weight_decay", "grad_clip", "max_seconds"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise ConfigError(f"TrainConfig.{name} must be finite and {'> 0' if name == 'lr' else '>= 0'}, got {v}")

    def step_config(self) -> "TrainConfig":
        """The fields the jitted step depends on (others reset), so runs that differ only in logging,
        evaluation or budget share one compiled step."""
        return dataclasses.replace(
            self,
            seed=0,
            eval_every=0,
            eval_images=0,
            final_eval_images=0,
            checkpoint_every=0,
            max_seconds=0.0,
            coord_jitter=0.0,
            prefetch=1,
            stop_at=0,
        )


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer micro-batch steps taken (int32 scalar)
    params: Any  # the model's parameter pytree (model.init_params)
    opt_state: Any  # make_optimizer(tc)'s state


def spread_subset(images: np.ndarray, n: int) -> np.ndarray:
    """`n` images spread evenly over the set (every k-th), not its first `n`: a split stored sorted by
    class (as the CIFAR-10 folders and archives are) would otherwise evaluate one class only."""
    if n <= 0 or n >= len(images):
        return images
    return images[np.linspace(0, len(images) - 1, n).round().astype(np.int64)]


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


# one compile for the optimizer state (op by op, every zeros_like of a new leaf shape compiled apart)
_opt_init = jax.jit(lambda params, tc: make_optimizer(tc).init(params), static_argnums=1)


def init_state(key: jax.Array, mc: gm.GinrConfig, tc: TrainConfig) -> TrainState:
    params = gm.init_params(key, mc)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=_opt_init(params, tc.step_config()))


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


def _train_step(state: TrainState, batch: dict, mc: gm.GinrConfig, tc: TrainConfig):
    (loss, per_image), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, mc, tc.bf16)
    updates, opt_state = make_optimizer(tc).update(grads, state.opt_state, state.params)
    new = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    return new, {"loss": loss, "psnr": psnr(per_image).mean()}


# (state, batch, mc, tc) -> (state, {"loss", "psnr"}); tc is TrainConfig.step_config(). Placed inputs
# (a state and batch on a mesh) keep their shardings: the same function runs on 1 or N devices.
train_step = jax.jit(_train_step, static_argnames=("mc", "tc"), donate_argnames=("state",))


def _eval_step(params: dict, images: jax.Array, mc: gm.GinrConfig) -> jax.Array:
    return gm.render(params, images, mc, 1)


# (params, images [B, S, S, 3] in [0, 1], mc) -> full-grid reconstructions [B, S, S, 3]
eval_step = jax.jit(_eval_step, static_argnames=("mc",))


def check_batch(batch: dict, mc: gm.GinrConfig) -> None:
    """Shapes and coordinate range, before the jitted step traces them."""
    gm.check_images(batch["images"], mc, "batch images")
    gm.check_coords(batch["coords"], "batch coords")
    B, N = batch["coords"].shape[:2]
    if batch["targets"].shape != (B, N, 3):
        raise DataError(f"batch targets: expected [{B}, {N}, 3], got {batch['targets'].shape}")


def check_dataset(images_u8: np.ndarray, mc: gm.GinrConfig, name: str) -> None:
    """A training/test set is uint8 [N, S, S, C] (as the loaders give it)."""
    S, C = mc.image_size, mc.channels
    if getattr(images_u8, "ndim", None) != 4 or images_u8.shape[1:] != (S, S, C):
        shape = getattr(images_u8, "shape", type(images_u8).__name__)
        raise DataError(f"{name} images must be [N, {S}, {S}, {C}] for this config, got {shape}")
    if images_u8.dtype != np.uint8:
        raise DataError(f"{name} images must be uint8 0..255 (as the loaders give them), got {images_u8.dtype}")
    if not len(images_u8):
        raise DataError(f"{name} images: the set is empty")


def _eval_batch_size(n: int, mesh: Mesh) -> int:
    data = int(mesh.shape["data"])
    bs = min(100, n) - min(100, n) % data
    if bs < 1:
        raise ConfigError(f"need at least {data} test images for the mesh data axis")
    return bs


def evaluate(params: dict, images_u8: np.ndarray, mc: gm.GinrConfig, mesh: Mesh | None = None) -> dict:
    """Full-grid reconstruction of every image: mean PSNR over images and mean MSE. With a mesh (the
    training loop's), `params` are already placed on it; every process passes all images and places
    its rows."""
    check_dataset(images_u8, mc, "evaluate:")
    if mesh is None:  # a call from outside the loop: params replicated over every visible device
        mesh = sh.make_mesh(None)
        params = sh.put_tree(params, jax.tree_util.tree_map(lambda _: sh.replicated(mesh), params))
    bs = _eval_batch_size(len(images_u8), mesh)
    rows = sh.local_rows(mesh, bs)
    ps, ms = [], []
    for i in range(0, len(images_u8), bs):
        x = images_u8[i : i + bs]
        n = len(x)
        if n < bs:  # pad the last batch to the compiled shape
            x = np.concatenate([x, np.repeat(x[-1:], bs - n, 0)])
        xf = x.astype(np.float32) / 255.0  # host-side arithmetic: no small per-op compiles
        rec = sh.to_host(eval_step(params, sh.shard_batch(xf[rows], mesh, bs), mc))
        mse = np.mean((rec.astype(np.float64) - xf) ** 2, axis=(1, 2, 3))[:n]
        ms.append(mse)
        ps.append(-10.0 * np.log10(np.maximum(mse, 1e-12)))
    ms, ps = np.concatenate(ms), np.concatenate(ps)
    return {"psnr": float(ps.mean()), "mse": float(ms.mean()), "images": int(len(ps))}


def _run_config(run_dir: Path) -> dict:
    return load_json(Path(run_dir) / "config.json", "GINR run config")


def load_run(run_dir: str | Path) -> tuple[dict, gm.GinrConfig, int]:
    """(params, model config, step) of the latest checkpoint of a `jaxsys ginr train` run directory."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{run_dir}: no config.json here (not a `jaxsys ginr train` run directory)")
    rec = _run_config(run_dir)
    try:
        mc = gm.GinrConfig(**rec["model"])
        train = dict(rec["train"])
        if "ckpt_every" in train:  # the field's earlier name
            train["checkpoint_every"] = train.pop("ckpt_every")
        tc = TrainConfig(**train)
    except (KeyError, TypeError) as e:
        raise DataError(f"{cfg_path}: not a GINR run config ({type(e).__name__}: {e})") from None
    if not (run_dir / "ckpt").is_dir():
        raise DataError(f"{run_dir}: no checkpoint yet (ckpt/ is missing)")
    with Checkpointer(run_dir / "ckpt") as ckpt:
        if ckpt.latest_step() is None:
            raise DataError(f"{run_dir}: no checkpoint yet (ckpt/ is empty)")
        state, _ = ckpt.restore(like=jax.eval_shape(lambda: init_state(jax.random.key(0), mc, tc)))
    return state.params, mc, int(state.step)


# model-config fields that only choose how the same maths is computed: they may change on resume
NUMERICS_FIELDS = ("scan_mode", "scan_chunk", "scan_checkpoint", "fuse_directions", "matmul_dtype")


def check_resume_config(run_dir: Path, mc: gm.GinrConfig) -> None:
    """Before restoring run_dir/ckpt: raise ConfigError naming the fields when the run was started
    with a model config of other parameter shapes or maths (everything except NUMERICS_FIELDS), so a
    mistaken --config or --dim gives this message instead of an orbax shape error."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    try:
        saved = _run_config(run_dir)["model"]
        diff = {
            k: (saved[k], v)
            for k, v in dataclasses.asdict(mc).items()
            if k not in NUMERICS_FIELDS and k in saved and saved[k] != v
        }
    except (DataError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: unreadable run config ({e}); use a fresh run directory") from None
    if diff:
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"{run_dir} holds a run of another model config ({what}); resume it with the same config "
            f"or use a fresh run directory"
        )


def train(
    mc: gm.GinrConfig,
    tc: TrainConfig,
    train_images: np.ndarray,
    test_images: np.ndarray,
    run_dir: str | Path,
    *,
    mesh: Mesh | None = None,
    fsdp: bool = False,
    log: Callable = print,
    progress: bool = True,
) -> dict:
    """Train on `mesh` (None: every visible device on 'data'), resuming from run_dir/ckpt when it holds
    a checkpoint (onto this mesh); returns the summary written to summary.json. Ctrl-C saves the last
    completed step, then raises KeyboardInterrupt."""
    check_dataset(train_images, mc, "train")
    check_dataset(test_images, mc, "test")
    mesh = sh.batch_mesh(tc.batch_size) if mesh is None else mesh
    if tc.batch_size % mesh.shape["data"]:
        raise ConfigError(f"batch_size {tc.batch_size} is not divisible by the mesh data axis ({mesh.shape['data']})")
    _eval_batch_size(len(test_images), mesh)  # before any work: enough test images for the mesh
    if tc.eval_every:
        _eval_batch_size(min(len(test_images), tc.eval_images), mesh)
    log = never_raises(log)
    run_dir = Path(run_dir)
    lead, nproc = jax.process_index() == 0, jax.process_count()
    mesh_cfg = str(sh.mesh_config(mesh))
    step_cfg = tc.step_config()
    like = jax.eval_shape(lambda: init_state(jax.random.key(tc.seed), mc, tc))
    shardings = sh.tree_shardings(like, mesh, fsdp=fsdp)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=2)
    train_seconds, start = 0.0, 0
    try:
        if ckpt.latest_step() is None:
            state = init_state(jax.random.key(tc.seed), mc, tc)
        else:
            check_resume_config(run_dir, mc)
            state, meta = ckpt.restore(like=sh.abstract_tree(like, shardings))
            start, train_seconds = int(sh.to_host(state.step)), float(meta.get("train_seconds", 0.0))
            log(f"resumed from step {start} ({train_seconds:.0f}s of training) onto mesh {mesh_cfg}")
        # one canonical form (plain, non-weak-typed arrays) for fresh and restored states, so a resumed
        # run reuses the compiled step instead of tracing it again
        state = sh.put_tree(jax.tree_util.tree_map(lambda a: np.asarray(sh.to_host(a)), state), shardings)
    except BaseException:
        ckpt.close()
        raise
    if lead:
        atomic_write_json(
            run_dir / "config.json",
            {
                "model": dataclasses.asdict(mc),
                "train": dataclasses.asdict(tc),
                "num_params": gm.num_params(state.params),
                "mesh": mesh_cfg,
                "fsdp": fsdp,
                "processes": nproc,
            },
        )
    meta = lambda: {"train_seconds": train_seconds, "mesh": mesh_cfg}
    rows = sh.local_rows(mesh, tc.batch_size)
    metrics = MetricsWriter(run_dir / "metrics.jsonl") if lead else None
    batches = gdata.Batches(
        train_images, tc.batch_size, tc.num_sample_coords, tc.seed, start, tc.prefetch, tc.coord_jitter
    )
    bar = Progress(total=tc.steps, desc=f"ginr [{mesh_cfg}]", initial=start, disable=not (progress and lead))
    step, compile_seconds, images_per_s = start, None, []
    fetch = jax.device_get if nproc == 1 else sh.to_host  # (to_host gathers across processes)
    # one device: numpy batches go straight to the jitted step (its C++ fast path places them, ~1 ms
    # less per step than placing each leaf from Python); on a larger mesh each leaf is split over 'data'
    place = (lambda b: b) if mesh.devices.size == 1 else (lambda b: sh.shard_batch(b, mesh))
    last = min(tc.stop_at or tc.steps, tc.steps)
    ctrl_c = StopOnCtrlC(enabled=nproc == 1)

    def save(n: int, st: TrainState) -> None:
        if ckpt.latest_step() != n:
            ckpt.save(n, st, meta=meta())

    try:
        with ctrl_c:
            while step < last and not (tc.max_seconds and train_seconds >= tc.max_seconds) and not ctrl_c.requested:
                full = next(batches)
                if compile_seconds is None:
                    check_batch(full, mc)
                t0 = time.perf_counter()
                state, m = train_step(state, place({k: v[rows] for k, v in full.items()}), mc, step_cfg)
                loss, train_psnr = (float(v) for v in fetch((m["loss"], m["psnr"])))  # the sync
                dt = time.perf_counter() - t0
                step += 1
                if compile_seconds is None:  # the first step of a (re)started run compiles
                    compile_seconds = dt
                else:
                    train_seconds += dt
                    images_per_s.append(tc.batch_size / dt)
                if not math.isfinite(loss):
                    raise DataError(f"training diverged at step {step}: loss = {loss}")
                rec = {"step": step, "loss": loss, "train_psnr": train_psnr, "images_per_s": tc.batch_size / dt}
                rec["train_seconds"] = train_seconds
                bar.set(loss=loss, psnr=train_psnr, img_s=round(tc.batch_size / dt, 1))
                bar.update()
                if tc.eval_every and step % tc.eval_every == 0:
                    ev = evaluate(state.params, spread_subset(test_images, tc.eval_images), mc, mesh)
                    rec.update({f"test_{k}": v for k, v in ev.items()})
                    log(f"step {step}: test PSNR {rec['test_psnr']:.2f} dB ({train_seconds:.0f}s)")
                if metrics:
                    metrics.write(**rec)
                if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                    save(step, state)
            if ctrl_c.requested:
                ctrl_c.stop(state, step, start, save, log, bar.close)
        bar.close()
        save(step, state)
        final_imgs = test_images if tc.final_eval_images == 0 else spread_subset(test_images, tc.final_eval_images)
        t0 = time.perf_counter()
        final = evaluate(state.params, final_imgs, mc, mesh)
        summary = {
            "steps": step,
            "train_seconds": round(train_seconds, 1),
            "compile_seconds": round(compile_seconds or 0.0, 1),
            "images_per_s_median": round(float(np.median(images_per_s)), 1) if images_per_s else None,
            "final_test_psnr": round(final["psnr"], 2),
            "final_test_psnr_exact": final["psnr"],
            "final_test_images": final["images"],
            "final_eval_seconds": round(time.perf_counter() - t0, 1),
            "num_params": gm.num_params(state.params),
            "mesh": mesh_cfg,
            "processes": nproc,
        }
        if metrics:
            metrics.write(
                step=step, train_seconds=train_seconds, final=True, **{f"test_{k}": v for k, v in final.items()}
            )
            metrics.close()  # the curve below reads it
        params = sh.to_host(state.params)  # a collective with several processes: all take part
        if lead:
            from jaxsys.ginr.plots import save_run_plots

            save_run_plots(params, test_images, mc, run_dir)
            atomic_write_json(run_dir / "summary.json", summary)
        return summary
    except KeyboardInterrupt:
        if not ctrl_c.stopped:  # a second Ctrl-C, or one that could not be deferred
            if nproc == 1:
                save_on_interrupt(state, start, save, log)
            else:  # a save is collective: the other processes may be gone
                log(f"interrupted at step {step}: no checkpoint on Ctrl-C with several processes")
        bar.close()
        raise
    finally:
        batches.close()
        if metrics:
            metrics.close()
        ckpt.close()
