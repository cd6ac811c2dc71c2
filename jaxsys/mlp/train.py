"""Training: a jitted train step with donated state, and the loop behind `jaxsys mlp train`.

    state = init_state(key, step_cfg)
    state, metrics = train_step(state, x_BxI, y_B, cfg=step_cfg)     # jitted once, state donated
    state, metrics_K = train_steps(state, xs_KxBxI, ys_KxB, cfg=step_cfg)  # K steps, one call

`StepConfig.grad` picks the hand-derived backward ("hand") or `jax.value_and_grad` ("autodiff");
`StepConfig.adam.kind` picks the hand Adam ("hand") or optax.adam ("optax").
"""

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsys.errors import ConfigError
from jaxsys.mlp import model as mlp_model
from jaxsys.mlp.adam import AdamConfig, make_optimizer
from jaxsys.mlp.data import Dataset, load
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json

GRADS = ("hand", "autodiff")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    model: mlp_model.MLPConfig = mlp_model.MLPConfig()  # network shape, task, activation, matmul
    adam: AdamConfig = AdamConfig()  # optimizer kind and hyper-parameters
    grad: str = "hand"  # "hand" (derived backward) or "autodiff" (jax.grad)

    def __post_init__(self):
        if self.grad not in GRADS:
            raise ConfigError(f"grad must be one of {GRADS}, got {self.grad!r}")


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar, optimizer steps taken
    params: list  # model params (list of {"w", "b"})
    opt_state: Any  # Adam state (hand AdamState or optax's)


def init_state(key: jax.Array, cfg: StepConfig, dtype=jnp.float32) -> TrainState:
    params = mlp_model.init(key, cfg.model, dtype)
    return TrainState(jnp.zeros([], jnp.int32), params, make_optimizer(cfg.adam).init(params))


def _metrics(loss, out, y, cfg: mlp_model.MLPConfig) -> dict:
    m = {"loss": loss}
    if cfg.task == "classify":
        m["accuracy"] = jnp.mean((jnp.argmax(out, axis=-1) == y).astype(jnp.float32))
    return m


def _train_step(state: TrainState, x: jax.Array, y: jax.Array, cfg: StepConfig) -> tuple[TrainState, dict]:
    if cfg.grad == "hand":
        (loss, out), grads = mlp_model.loss_and_grad(state.params, x, y, cfg.model)
    else:

        def f(p):
            out, _ = mlp_model.forward(p, x, cfg.model)
            return mlp_model.loss_forward(out, y, cfg.model)[0], out

        (loss, out), grads = jax.value_and_grad(f, has_aux=True)(state.params)
    updates, opt_state = make_optimizer(cfg.adam).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), _metrics(loss, out, y, cfg.model)


train_step = jax.jit(_train_step, static_argnames=("cfg",), donate_argnames=("state",))


def _train_steps(state: TrainState, xs_KxBxI: jax.Array, ys_KxB: jax.Array, cfg: StepConfig) -> tuple[TrainState, dict]:
    def body(s, xy):
        return _train_step(s, *xy, cfg=cfg)

    return jax.lax.scan(body, state, (xs_KxBxI, ys_KxB))


# K steps in one call (a lax.scan over K stacked batches): the same updates as K train_step calls,
# without K host round trips. Metrics come back stacked, one entry per step.
train_steps = jax.jit(_train_steps, static_argnames=("cfg",), donate_argnames=("state",))


def _evaluate(params, x, y, cfg: mlp_model.MLPConfig) -> dict:
    out, _ = mlp_model.forward(params, x, cfg)
    return _metrics(mlp_model.loss_forward(out, y, cfg)[0], out, y, cfg)


evaluate = jax.jit(_evaluate, static_argnames=("cfg",))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    task: str = "classify"  # "classify" (digits) or "regress" (diabetes)
    hidden: tuple[int, ...] = (64, 64)  # hidden layer widths h2, h3, ...
    activation: str = "relu"  # hidden activation
    steps: int = 3000  # optimizer steps in total (a resumed run continues to this)
    batch: int = 64  # minibatch size B (sampled without replacement per step)
    optimizer: str = "hand"  # "hand" Adam or "optax" Adam
    grad: str = "hand"  # "hand" backward or "autodiff" (jax.value_and_grad)
    learning_rate: float = 1e-3  # Adam lr
    matmul: str = "xla"  # "xla" or "pallas" (tiled kernel; interpreted on CPU: slow)
    seed: int = 0  # init and minibatch seed
    log_every: int = 50  # steps between metrics records
    eval_every: int = 500  # steps between test-set evaluations
    ckpt_every: int = 1000  # steps between checkpoints (and one at the end)

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("steps", "batch", "log_every", "eval_every", "ckpt_every"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        # model, optimizer and gradient settings, checked here (placeholder input/output widths) so that
        # a bad value fails before the CLI makes a run directory or loads data
        StepConfig(
            mlp_model.MLPConfig((2, *self.hidden, 2), self.task, self.activation, self.matmul),
            AdamConfig(self.optimizer, self.learning_rate),
            self.grad,
        )

    def step_config(self, data: Dataset) -> StepConfig:
        sizes = (data.x_train.shape[1], *self.hidden, data.num_outputs)
        return StepConfig(
            mlp_model.MLPConfig(sizes, self.task, self.activation, self.matmul),
            AdamConfig(self.optimizer, self.learning_rate),
            self.grad,
        )


def _batch_indices(n: int, batch: int, seed: int, step: int) -> np.ndarray:
    # a function of (seed, step) only, so a resumed run draws the same minibatches
    return np.random.default_rng([seed, step]).choice(n, batch, replace=False)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    data: Dataset | None = None,
    resume: bool = False,
    log=print,
    progress: bool = True,
) -> dict:
    """Train on `data` (default: the task's real data set); writes config.json, metrics.jsonl,
    ckpt/ (orbax) and summary.json under run_dir; returns the summary."""
    run_dir = Path(run_dir)
    data = load(cfg.task) if data is None else data
    scfg = cfg.step_config(data)  # validates model/optimizer settings
    if cfg.batch > len(data.x_train):
        raise ConfigError(f"batch {cfg.batch} exceeds the {len(data.x_train)} training examples")
    mlp_model.validate_batch(data.x_train, data.y_train, scfg.model, where=f"{data.name} train set")
    mlp_model.validate_batch(data.x_test, data.y_test, scfg.model, where=f"{data.name} test set")
    config_record = {"train": dataclasses.asdict(cfg), "sizes": list(scfg.model.sizes), "data": data.name}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config_record)

    state = init_state(jax.random.PRNGKey(cfg.seed), scfg)
    ckpt = Checkpointer(run_dir / "ckpt")
    start = 0
    if resume and ckpt.latest_step() is not None:
        saved = ckpt.read_meta().get("config", {})  # compare configs before reading arrays
        if saved and (saved.get("sizes") != config_record["sizes"] or saved["train"].get("optimizer") != cfg.optimizer):
            ckpt.close()
            raise ConfigError(
                f"cannot resume {run_dir}: checkpoint was written for "
                f"{saved.get('sizes')} / {saved['train'].get('optimizer')}, this run is "
                f"{config_record['sizes']} / {cfg.optimizer}"
            )
        state, _ = ckpt.restore(like=state)
        start = int(state.step)
        log(f"resumed from step {start} in {ckpt.directory}")

    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    n = len(data.x_train)
    metrics_w = MetricsWriter(run_dir / "metrics.jsonl")
    bar = Progress(total=cfg.steps, initial=start, desc=f"mlp {cfg.task}", disable=not progress)
    t0 = time.perf_counter()
    last = {}
    try:
        for step in range(start, cfg.steps):
            idx = _batch_indices(n, cfg.batch, cfg.seed, step)
            state, m = train_step(state, x_train[idx], y_train[idx], cfg=scfg)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                last = {k: float(v) for k, v in m.items()}
                bar.set(**last)
                metrics_w.write(step=done, split="train", **last)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                ev = {k: float(v) for k, v in evaluate(state.params, x_test, y_test, cfg=scfg.model).items()}
                bar.set(**{f"test_{k}": v for k, v in ev.items()})
                metrics_w.write(step=done, split="test", **ev)
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                ckpt.save(done, state, meta={"config": config_record, **last})
            bar.update()
    finally:
        bar.close()
        metrics_w.close()
        ckpt.close()

    ev = {k: float(v) for k, v in evaluate(state.params, x_test, y_test, cfg=scfg.model).items()}
    tr = {k: float(v) for k, v in evaluate(state.params, x_train, y_train, cfg=scfg.model).items()}
    summary = {
        "data": data.name,
        "task": cfg.task,
        "sizes": list(scfg.model.sizes),
        "steps": int(state.step),
        "resumed_from": start,
        "seconds": round(time.perf_counter() - t0, 2),
        **{f"train_{k}": v for k, v in tr.items()},
        **{f"test_{k}": v for k, v in ev.items()},
    }
    if cfg.task == "regress":  # MSE loss is (1/2) mean sq. error in standardised units
        summary["test_rmse"] = float(np.sqrt(2 * ev["loss"]) * data.y_std)
    atomic_write_json(run_dir / "summary.json", summary)
    log(json.dumps(summary))
    return summary
