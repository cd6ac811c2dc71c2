"""Training: config, state, the jitted burst (a `lax.scan` over micro-batches with in-graph sampling),
the driver loop with progress, metrics JSONL, orbax checkpoints + resume, and several seeds at once
with `vmap`.

State (a pytree of arrays, checkpointed as is):
    {"params": {"W": [...], "b": [...]}, "Z": [S, d], "opt": optax state or (), "step": int32}
With `num_seeds > 1` every leaf has a leading seed axis.

Micro-batch `step` draws its samples with `fold_in(PRNGKey(seed), step)`, so a resumed run sees the
same samples as an uninterrupted one.
"""

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder import schedules as S
from jaxsys.autodecoder.sampler import SamplerConfig, sample
from jaxsys.errors import ConfigError
from jaxsys.train.compile import init_jit


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: M.ModelConfig = M.ModelConfig()  # network and latent sizes
    sched: S.ScheduleConfig = S.ScheduleConfig()  # schedule and its learning rates
    sampler: SamplerConfig = SamplerConfig()  # shapes and sample mixture
    batch_size: int = 256  # samples per micro-batch
    steps: int = 120_000  # micro-batches in total
    steps_per_call: int = 500  # micro-batches per jitted burst
    seed: int = 0  # base seed (seed i of num_seeds uses seed + i)
    num_seeds: int = 1  # independent runs trained together with vmap
    ckpt_every: int = 20  # bursts between checkpoints (0: only at the end)
    eval_res: int = 128  # resolution of the final IoU evaluation

    def validate(self) -> "TrainConfig":
        self.model.validate()
        self.sched.validate()
        self.sampler.validate()
        for f in ("batch_size", "steps", "steps_per_call", "num_seeds", "eval_res"):
            if getattr(self, f) < 1:
                raise ConfigError(f"TrainConfig.{f} must be >= 1, got {getattr(self, f)}")
        if self.ckpt_every < 0:
            raise ConfigError(f"TrainConfig.ckpt_every must be >= 0, got {self.ckpt_every}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        md = d.pop("model")
        m = M.ModelConfig(**{**md, "hidden": tuple(md["hidden"])})
        s = S.ScheduleConfig(**d.pop("sched"))
        sm = d.pop("sampler")
        sp = SamplerConfig(**{**sm, "shapes": tuple(sm["shapes"])})
        return TrainConfig(model=m, sched=s, sampler=sp, **d)


def init_state(key: jax.Array, cfg: TrainConfig) -> dict:
    """Fresh state for one seed."""
    return _init_state_jit(key, StepConfig.of(cfg))


def _init_state(key, cfg):
    kp, kz = jax.random.split(key)
    params = M.init_params(kp, cfg.model)
    Z = M.init_latents(kz, len(cfg.sampler.shapes), cfg.model)
    return {"params": params, "Z": Z, "opt": S.init_opt(params, Z, cfg.sched), "step": jnp.zeros((), jnp.int32)}


# compiled at XLA's backend optimisation level 0 (jaxsys.train.compile.init_jit): the vmapped 4-seed
# init compiles in 1.4 s instead of 8 s, values within 1 float32 ulp of the default level's
_init_state_jit = init_jit(_init_state, static_argnames="cfg")


def _init_states(keys, cfg):
    return jax.vmap(lambda k: _init_state(k, cfg))(keys)


_init_states_jit = init_jit(_init_states, static_argnames="cfg")


def init_states(cfg: TrainConfig) -> dict:
    """State for all seeds (leading seed axis when num_seeds > 1); seed i starts from
    PRNGKey(cfg.seed + i). Compiled once per StepConfig."""
    cfg.validate()
    if cfg.num_seeds == 1:
        return init_state(jax.random.PRNGKey(cfg.seed), cfg)
    keys = jnp.stack([jax.random.PRNGKey(cfg.seed + i) for i in range(cfg.num_seeds)])
    return _init_states_jit(keys, StepConfig.of(cfg))


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The part of TrainConfig the compiled burst depends on (the jit static argument), so that
    runs differing only in seed, length or logging share one compilation."""

    model: M.ModelConfig
    sched: S.ScheduleConfig
    sampler: SamplerConfig
    batch_size: int
    num_seeds: int

    @staticmethod
    def of(cfg: TrainConfig) -> "StepConfig":
        return StepConfig(cfg.model, cfg.sched, cfg.sampler, cfg.batch_size, cfg.num_seeds)


def _step(state: dict, data_key: jax.Array, cfg: StepConfig):
    dt = cfg.model.jdtype
    batch = sample(jax.random.fold_in(data_key, state["step"]), cfg.batch_size, cfg.sampler, dt)
    params, Z, opt, loss = S.update(state["params"], state["Z"], state["opt"], batch, cfg.model, cfg.sched)
    new = {"params": params, "Z": Z, "opt": opt, "step": state["step"] + 1}
    mean_abs_z = jnp.mean(jnp.linalg.norm(Z, axis=-1))
    return new, (jnp.mean(loss), mean_abs_z)


def _burst(state: dict, data_key: jax.Array, cfg: StepConfig, n_steps: int):
    """`n_steps` micro-batches; returns (state, per-step mean loss [n], per-step mean |z| [n])."""
    state, (loss, zn) = jax.lax.scan(lambda s, _: _step(s, data_key, cfg), state, None, length=n_steps)
    return state, loss, zn


def _burst_seeds(state, data_keys, cfg: StepConfig, n_steps: int):
    if cfg.num_seeds == 1:
        return _burst(state, data_keys, cfg, n_steps)
    return jax.vmap(lambda s, k: _burst(s, k, cfg, n_steps))(state, data_keys)


burst_jit = jax.jit(_burst_seeds, static_argnames=("cfg", "n_steps"), donate_argnums=(0,))


def train_burst(state: dict, data_keys: jax.Array, cfg: TrainConfig, n_steps: int):
    """Run `n_steps` micro-batches of every seed (jitted once per StepConfig and n_steps; the
    state's buffers are donated). Returns (state, loss [(seeds,) n], mean |z| [(seeds,) n])."""
    return burst_jit(state, data_keys, cfg=StepConfig.of(cfg), n_steps=n_steps)


def data_keys(cfg: TrainConfig) -> jax.Array:
    if cfg.num_seeds == 1:
        return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
    return jnp.stack([jax.random.fold_in(jax.random.PRNGKey(cfg.seed + i), 1) for i in range(cfg.num_seeds)])


def seed_slice(state: dict, i: int, cfg: TrainConfig) -> dict:
    """The state of seed i (identity when num_seeds == 1)."""
    if cfg.num_seeds == 1:
        return state
    return jax.tree_util.tree_map(lambda x: x[i], state)


def train(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = True,
    progress: bool = True,
    log=print,
    render: bool = True,
    infer_shape: str | None = None,
    infer_cfg=None,
    mesh=None,
) -> dict:
    """Train, writing run_dir/{config.json, metrics.jsonl, ckpt/, *.png, summary.json}.

    Resumes from the latest checkpoint in run_dir/ckpt when `resume` and one exists (the config
    stored in run_dir must then match). Returns the summary dict (per-shape IoU etc.)."""
    from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json

    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists() and resume:
        old = json.loads(cfg_path.read_text())
        if TrainConfig.from_dict(old) != dataclasses.replace(cfg, steps=TrainConfig.from_dict(old).steps):
            raise ConfigError(
                f"{run_dir} holds a run with a different config; use a new --out "
                "or matching options (only --steps may change on resume)"
            )
    atomic_write_json(cfg_path, cfg.to_dict())
    state = init_states(cfg)
    ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=2)
    start = 0
    if resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(like=state)
        start = int(meta.get("step", ckpt.latest_step()))
        log(f"resumed from step {start} in {run_dir / 'ckpt'}")
    keys = data_keys(cfg)
    burst = functools.partial(train_burst, cfg=cfg)
    if mesh is not None:  # the seed axis split over the mesh's 'data' devices (jaxsys.autodecoder.sharded)
        from jaxsys.autodecoder import sharded

        state, keys = sharded.put_seed_state(state, mesh), sharded.put_seed_state(keys, mesh)
        burst = lambda s, k, n_steps: sharded.make_sharded_burst(mesh, cfg, n_steps)(s, k)  # noqa: E731
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    step = start
    total_samples = cfg.steps * cfg.batch_size
    bar = Progress(total=cfg.steps, desc=f"autodecoder/{cfg.sched.name}", initial=start, disable=not progress)
    t0 = time.perf_counter()
    n_bursts = 0
    while step < cfg.steps:
        n = min(cfg.steps_per_call, cfg.steps - step)
        state, loss, zn = burst(state, keys, n_steps=n)
        loss = np.asarray(loss).reshape(-1, n)
        zn = np.asarray(zn).reshape(-1, n)
        step += n
        n_bursts += 1
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
        if cfg.ckpt_every and n_bursts % cfg.ckpt_every == 0 and step < cfg.steps:
            ckpt.save(step, state, meta={"step": step})
    bar.close()
    train_s = time.perf_counter() - t0
    ckpt.save(step, state, meta={"step": step})
    ckpt.close()
    metrics.close()
    summary = {
        "schedule": cfg.sched.name,
        "steps": step,
        "samples": step * cfg.batch_size,
        "train_seconds": round(train_s, 2),
        "samples_per_s": round((step - start) * cfg.batch_size / max(train_s, 1e-9), 1),
        "total_samples_planned": total_samples,
    }
    from jaxsys.autodecoder import recon

    summary["seeds"] = []
    for i in range(cfg.num_seeds):
        st = seed_slice(state, i, cfg)
        summary["seeds"].append(recon.evaluate(st["params"], st["Z"], cfg, res=cfg.eval_res))
    s0 = summary["seeds"][0]
    summary["iou"] = s0["iou"]
    summary["contour_abs_sdf"] = s0["contour_abs_sdf"]
    st = seed_slice(state, 0, cfg)
    if render:
        from jaxsys.autodecoder import plots

        summary["pngs"] = plots.render_all(
            run_dir, st["params"], st["Z"], cfg, metrics_path=run_dir / "metrics.jsonl", iou=s0["iou"]
        )
    if infer_shape:
        from jaxsys.autodecoder import infer

        icfg = infer_cfg or infer.InferConfig(lambda_z=cfg.sched.lambda_z)
        t1 = time.perf_counter()
        z, losses = infer.infer_latent(st["params"], cfg.model, infer_shape, icfg, cfg.sampler)
        m = recon.shape_metrics(st["params"], z, cfg.model, infer_shape, cfg.eval_res)
        summary["inferred"] = {
            "shape": infer_shape,
            **m,
            "final_loss": float(losses[-1]),
            "seconds": round(time.perf_counter() - t1, 2),
        }
        if render:
            from jaxsys.autodecoder import plots

            plots.plot_inferred(
                st["params"],
                z,
                infer_shape,
                cfg.model,
                cfg.sampler.beta,
                cfg.eval_res,
                run_dir / "inferred.png",
                m["iou"],
            )
            summary["pngs"].append("inferred.png")
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def load_run(run_dir: Path, seed_index: int = 0):
    """(cfg, params, Z) of the latest checkpoint in run_dir."""
    from jaxsys.errors import DataError
    from jaxsys.train import Checkpointer

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise DataError(f"{run_dir} is not an autodecoder run directory (no config.json)")
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    like = init_states(cfg)
    with Checkpointer(run_dir / "ckpt") as ck:
        state, _ = ck.restore(like=like)
    if not 0 <= seed_index < cfg.num_seeds:
        raise ConfigError(f"seed index {seed_index} out of range (run has {cfg.num_seeds} seeds)")
    st = seed_slice(state, seed_index, cfg)
    return cfg, st["params"], st["Z"]


def samples_per_second(cfg: TrainConfig, n_steps: int, repeats: int = 3) -> float:
    """Throughput of `train_burst` (compile excluded; median of `repeats`)."""
    state = init_states(cfg)
    keys = data_keys(cfg)
    state, loss, _ = train_burst(state, keys, cfg=cfg, n_steps=n_steps)
    loss.block_until_ready()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, loss, _ = train_burst(state, keys, cfg=cfg, n_steps=n_steps)
        loss.block_until_ready()
        ts.append(time.perf_counter() - t)
    return n_steps * cfg.batch_size * cfg.num_seeds / float(np.median(ts))
