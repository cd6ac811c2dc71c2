"""Training: config, state, the jitted `train_step` (a `lax.scan` over micro-batches with in-graph
sampling), and the one driver loop with progress, metrics JSONL, orbax checkpoints, automatic resume
and a checkpoint on Ctrl-C. Several independent seeds train together with `vmap`; the loop always runs
on a mesh whose 'data' axis splits the seeds (one device is a one-device mesh).

With `num_seeds > 1` every leaf of the TrainState has a leading seed axis; seeds share nothing, so XLA
partitions the vmapped step over the devices without communication. Seed i draws its keys from
`fold_in(key, i)`, and its micro-batch `step` from `fold_in(data_key_i, step)`, so a resumed run sees
the same samples as an uninterrupted one and seed 0 of a several-seed run is the one-seed run.
"""

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder import schedules as S
from jaxsys.autodecoder.sampler import SamplerConfig, sample
from jaxsys.errors import ConfigError, DataError
from jaxsys.train import sharding as sh
from jaxsys.train.compile import init_jit


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The part of TrainConfig the compiled step depends on (its static argument), so that runs
    differing only in seed, length or logging share one compilation."""

    model: M.ModelConfig  # network and latent sizes
    sched: S.ScheduleConfig  # schedule and its learning rates
    sampler: SamplerConfig  # shapes and sample mixture
    batch_size: int  # samples per micro-batch
    num_seeds: int  # independent runs trained together with vmap


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: M.ModelConfig = M.ModelConfig()  # network and latent sizes
    sched: S.ScheduleConfig = S.ScheduleConfig()  # schedule and its learning rates
    sampler: SamplerConfig = SamplerConfig()  # shapes and sample mixture
    batch_size: int = 256  # samples per micro-batch
    steps: int = 120_000  # micro-batches in total
    steps_per_call: int = 500  # micro-batches per jitted train_step call
    seed: int = 0  # base seed; seed i of num_seeds starts from fold_in(key(seed), i)
    num_seeds: int = 1  # independent runs trained together with vmap
    checkpoint_every: int = 10_000  # micro-batches between checkpoints (0: only at the end)
    eval_res: int = 128  # resolution of the final IoU evaluation

    def __post_init__(self):
        for f in ("batch_size", "steps", "steps_per_call", "num_seeds", "eval_res"):
            if getattr(self, f) < 1:
                raise ConfigError(f"TrainConfig.{f} must be >= 1, got {getattr(self, f)}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"TrainConfig.checkpoint_every must be >= 0, got {self.checkpoint_every}")

    def step_config(self) -> StepConfig:
        return StepConfig(self.model, self.sched, self.sampler, self.batch_size, self.num_seeds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict, where: str = "config") -> "TrainConfig":
        try:
            d = dict(d)
            m = M.ModelConfig(**d.pop("model"))
            s = S.ScheduleConfig(**d.pop("sched"))
            sp = SamplerConfig(**d.pop("sampler"))
            return TrainConfig(model=m, sched=s, sampler=sp, **d)
        except (TypeError, KeyError, AttributeError) as e:
            raise DataError(f"{where} is not an auto-decoder training config: {e}") from None


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 micro-batches done
    params: dict  # {"W": [W_l], "b": [b_l]}
    opt_state: Any  # optax state of the batched schedule, () for the SGD schedules
    latents: jax.Array  # Z [num_shapes, d]


def seed_keys(key: jax.Array, num_seeds: int) -> jax.Array:
    """Key of seed i: fold_in(key, i); [num_seeds] keys, or one key (no seed axis) for one seed."""
    if num_seeds == 1:
        return jax.random.fold_in(key, 0)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_seeds))


def _init_state(key: jax.Array, cfg: StepConfig) -> TrainState:
    def one(k):
        kp, kz = jax.random.split(k)
        params = M.init_params(kp, cfg.model)
        Z = M.init_latents(kz, len(cfg.sampler.shapes), cfg.model)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=S.init_opt(params, Z, cfg.sched), latents=Z
        )

    ks = seed_keys(key, cfg.num_seeds)
    return one(ks) if cfg.num_seeds == 1 else jax.vmap(one)(ks)


# a few random draws: compiled at XLA's backend optimisation level 0 (jaxsys.train.compile.init_jit)
_init_state_jit = init_jit(_init_state, static_argnames="cfg")


def init_state(key: jax.Array, cfg: TrainConfig) -> TrainState:
    """Fresh state of every seed (leading seed axis when num_seeds > 1)."""
    return _init_state_jit(key, cfg.step_config())


def data_keys(key: jax.Array, cfg: TrainConfig) -> jax.Array:
    """The sampling key of every seed ([num_seeds], or one key for one seed)."""
    ks = seed_keys(key, cfg.num_seeds)
    return jax.random.fold_in(ks, 1) if cfg.num_seeds == 1 else jax.vmap(lambda k: jax.random.fold_in(k, 1))(ks)


def _micro_batch(state: TrainState, data_key: jax.Array, cfg: StepConfig):
    batch = sample(jax.random.fold_in(data_key, state.step), cfg.batch_size, cfg.sampler, cfg.model.jdtype)
    params, Z, opt, loss = S.update(state.params, state.latents, state.opt_state, batch, cfg.model, cfg.sched)
    new = TrainState(step=state.step + 1, params=params, opt_state=opt, latents=Z)
    return new, (jnp.mean(loss), jnp.mean(jnp.linalg.norm(Z, axis=-1)))


def _one_seed(state: TrainState, data_key: jax.Array, cfg: StepConfig, n_steps: int):
    state, (loss, zn) = jax.lax.scan(lambda s, _: _micro_batch(s, data_key, cfg), state, None, length=n_steps)
    return state, loss, zn


def _train_step(state: TrainState, data_keys: jax.Array, cfg: StepConfig, n_steps: int):
    """`n_steps` micro-batches of every seed in one call -> (state, per-step mean loss [(seeds,) n],
    per-step mean |z| [(seeds,) n]). `train_step` is its jit (once per StepConfig and n_steps; the
    state is donated): `train_step(state, keys, cfg=tcfg.step_config(), n_steps=n)`. On a mesh, place
    the state and keys with `put_seed_state`: the step runs where they live."""
    if cfg.num_seeds == 1:
        return _one_seed(state, data_keys, cfg, n_steps)
    return jax.vmap(lambda s, k: _one_seed(s, k, cfg, n_steps))(state, data_keys)


train_step = jax.jit(_train_step, static_argnames=("cfg", "n_steps"), donate_argnames="state")


def seed_slice(tree: Any, i: int, cfg: TrainConfig) -> Any:
    """The state (or any seed-major tree) of seed i (identity when num_seeds == 1)."""
    if cfg.num_seeds == 1:
        return tree
    return jax.tree_util.tree_map(lambda x: x[i], tree)


# ------------------------------------------------------------------------------ seeds on a mesh
def check_seed_mesh(mesh: Mesh, cfg: TrainConfig) -> None:
    d = int(mesh.shape["data"])
    if cfg.num_seeds == 1 and d > 1:
        raise ConfigError(
            f"one seed cannot be spread over {d} devices; use --num-seeds a multiple of the mesh data axis"
        )
    if cfg.num_seeds % d:
        raise ConfigError(f"num_seeds={cfg.num_seeds} is not divisible by the mesh data axis ({d})")


def seed_mesh(cfg: TrainConfig) -> Mesh:
    """The default mesh: the seeds over as many visible devices as divide num_seeds (all of them
    when their count divides it; one seed trains on one device). With several processes: every device."""
    if jax.process_count() > 1:
        return sh.make_mesh(None)
    return sh.make_mesh(None, devices=jax.devices()[: math.gcd(cfg.num_seeds, jax.device_count())])


def seed_shardings(tree: Any, mesh: Mesh) -> Any:
    """Every leaf split on its leading (seed) axis over 'data' (replicated when 'data' is 1)."""
    split = int(mesh.shape["data"]) > 1
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, P("data") if split and len(x.shape) >= 1 else P()), tree
    )


def put_seed_state(tree: Any, mesh: Mesh) -> Any:
    return sh.put_tree(tree, seed_shardings(tree, mesh))


# ------------------------------------------------------------------------------------ the loop
def _check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """A run dir holding a checkpoint must hold this run: only --steps and --checkpoint-every may change."""
    from jaxsys.train.checkpoint import check_resume_config
    from jaxsys.train.io import load_json

    where = f"{run_dir}/config.json"
    old = TrainConfig.from_dict(load_json(run_dir / "config.json", where), where)
    check_resume_config(
        run_dir,
        old.to_dict(),
        cfg.to_dict(),
        may_change=("steps", "checkpoint_every"),
        advice="use a new --run-dir or matching options (only --steps and --checkpoint-every may change on resume)",
    )


def train(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    mesh: Mesh | None = None,
    progress: bool = True,
    log=print,
    render: bool = True,
    infer_shape: str | None = None,
    infer_cfg=None,
) -> dict:
    """Train, writing run_dir/{config.json, metrics.jsonl, ckpt/, *.png, summary.json}.

    Resumes from the latest checkpoint in run_dir/ckpt when there is one (the config stored in
    run_dir must then match). `mesh=None` is `seed_mesh(cfg)`. Returns the summary dict (per-shape
    IoU etc.). Ctrl-C lets the call in flight finish, saves a checkpoint at it, then raises
    KeyboardInterrupt (a second Ctrl-C raises at once, saving the newest whole state); one process
    only: with several, the last periodic checkpoint stands."""
    from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
    from jaxsys.train.interrupt import StopOnCtrlC, never_raises, save_on_interrupt

    log = never_raises(log)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mesh = seed_mesh(cfg) if mesh is None else mesh
    check_seed_mesh(mesh, cfg)
    ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=2)
    resuming = ckpt.latest_step() is not None
    if resuming:
        _check_resume(run_dir, cfg)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    key = jax.random.key(cfg.seed)
    state = put_seed_state(init_state(key, cfg), mesh)
    keys = put_seed_state(data_keys(key, cfg), mesh)
    start = 0
    if resuming:
        state, meta = ckpt.restore(like=state)
        start = int(meta.get("step", ckpt.latest_step()))
        log(f"resumed from step {start} in {run_dir / 'ckpt'}")
    scfg = cfg.step_config()
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    step = start
    bar = Progress(total=cfg.steps, desc=f"autodecoder/{cfg.sched.name}", initial=start, disable=not progress)

    def save(step: int, state: TrainState) -> None:
        if ckpt.latest_step() != step:
            ckpt.save(step, state, meta={"step": step})

    nproc = jax.process_count()
    ctrl_c = StopOnCtrlC(enabled=nproc == 1)
    try:
        t0 = time.perf_counter()
        with ctrl_c:
            while step < cfg.steps and not ctrl_c.requested:
                n = min(cfg.steps_per_call, cfg.steps - step)
                state, loss, zn = train_step(state, keys, cfg=scfg, n_steps=n)
                loss = np.asarray(sh.to_host(loss)).reshape(-1, n)
                zn = np.asarray(sh.to_host(zn)).reshape(-1, n)
                step += n
                if not np.all(np.isfinite(loss)):
                    raise ConfigError(f"training diverged (non-finite loss) by step {step}; lower the learning rates")
                elapsed = time.perf_counter() - t0
                metrics.write(
                    step=step,
                    samples=step * cfg.batch_size,
                    loss=float(loss[:, -1].mean()),
                    loss_burst=float(loss.mean()),
                    mean_abs_z=float(zn[:, -1].mean()),
                    loss_per_seed=[float(v) for v in loss.mean(1)],
                    samples_per_s=(step - start) * cfg.batch_size / max(elapsed, 1e-9),
                )
                bar.set(loss=float(loss.mean()), z=float(zn[:, -1].mean()))
                bar.update(n)
                every = cfg.checkpoint_every
                if every and step // every > (step - n) // every and step < cfg.steps:
                    save(step, state)
            if ctrl_c.requested:  # the first Ctrl-C: the call in flight has finished
                ctrl_c.stop(state, step, start, save, log, bar.close)
        bar.close()
        train_s = time.perf_counter() - t0
        save(step, state)
    except KeyboardInterrupt:
        if not ctrl_c.stopped:  # a second Ctrl-C, or one that could not wait for the call
            if nproc == 1:
                save_on_interrupt(state, start, save, log)
            else:  # a save is collective: the other processes may be gone
                log(f"interrupted at step {step}: no checkpoint on Ctrl-C with several processes")
        bar.close()
        raise
    finally:
        metrics.close()
        ckpt.close()
    summary = {
        "schedule": cfg.sched.name,
        "steps": step,
        "samples": step * cfg.batch_size,
        "train_seconds": round(train_s, 2),
        "samples_per_s": round((step - start) * cfg.batch_size / max(train_s, 1e-9), 1),
        "total_samples_planned": cfg.steps * cfg.batch_size,
    }
    summary.update(_evaluate(sh.to_host(state), cfg, run_dir, render, infer_shape, infer_cfg))
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def _evaluate(state: TrainState, cfg: TrainConfig, run_dir: Path, render: bool, infer_shape, infer_cfg) -> dict:
    """IoU of every seed, PNGs of seed 0 and (with `infer_shape`) a new shape's inferred latent."""
    from jaxsys.autodecoder import plots, recon

    out: dict = {"seeds": []}
    for i in range(cfg.num_seeds):
        st = seed_slice(state, i, cfg)
        out["seeds"].append(recon.evaluate(st.params, st.latents, cfg, res=cfg.eval_res))
    s0 = out["seeds"][0]
    out["iou"] = s0["iou"]
    out["contour_abs_sdf"] = s0["contour_abs_sdf"]
    st = seed_slice(state, 0, cfg)
    if render:
        out["pngs"] = plots.render_all(
            run_dir, st.params, st.latents, cfg, metrics_path=run_dir / "metrics.jsonl", iou=s0["iou"]
        )
    if infer_shape:
        from jaxsys.autodecoder import infer

        icfg = infer_cfg or infer.InferConfig(lambda_z=cfg.sched.lambda_z)
        t1 = time.perf_counter()
        z, losses = infer.infer_latent(st.params, cfg.model, infer_shape, icfg, cfg.sampler)
        m = recon.shape_metrics(st.params, z, cfg.model, infer_shape, cfg.eval_res)
        out["inferred"] = {
            "shape": infer_shape,
            **m,
            "final_loss": float(losses[-1]),
            "seconds": round(time.perf_counter() - t1, 2),
        }
        if render:
            plots.plot_inferred(
                st.params, z, infer_shape, cfg.model, cfg.sampler.beta, cfg.eval_res, run_dir / "inferred.png", m["iou"]
            )
            out["pngs"].append("inferred.png")
    return out


def load_run(run_dir: Path, seed_index: int = 0) -> tuple[TrainConfig, dict, jax.Array]:
    """(cfg, params, Z) of seed `seed_index` at the latest checkpoint in run_dir."""
    from jaxsys.train import Checkpointer
    from jaxsys.train.io import load_json

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise DataError(f"{run_dir} is not an autodecoder run directory (no config.json)")
    where = f"{run_dir}/config.json"
    cfg = TrainConfig.from_dict(load_json(run_dir / "config.json", where), where)
    if not 0 <= seed_index < cfg.num_seeds:
        raise ConfigError(f"seed index {seed_index} out of range (run has {cfg.num_seeds} seeds)")
    like = init_state(jax.random.key(0), cfg)  # structure only; the checkpoint's values replace it
    with Checkpointer(run_dir / "ckpt") as ck:
        state, _ = ck.restore(like=like)
    st = seed_slice(state, seed_index, cfg)
    return cfg, st.params, st.latents
