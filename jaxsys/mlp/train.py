"""Training of the MLP: a jitted train step with donated state, and the one loop behind `jaxsys mlp
train`, which always runs on a device mesh (one device is a one-device mesh).

    state = init_state(key, step_cfg)
    state, metrics = train_step(state, x_BxI, y_B, cfg=step_cfg)     # jitted once, state donated
    state, metrics_K = train_steps(state, xs_KxBxI, ys_KxB, cfg=step_cfg)  # K steps, one call
    summary = train(TrainConfig(steps=3000), "runs/mlp", mesh=None)  # None: every device on 'data'

`StepConfig.grad` picks the hand-derived backward ("hand") or `jax.value_and_grad` ("autodiff");
`StepConfig.adam.kind` picks the hand Adam ("hand") or optax.adam ("optax").

On a mesh the batch is split over 'data' and the layers are paired Megatron-style over 'model'
(w_OxI): layer 0 split by output rows, layer 1 by input columns (one all-reduce closes the pair),
layer 2 by rows, ...; an unpaired last layer stays replicated. `fsdp=True` also splits large
parameters and their Adam moments over 'data' (jaxsys.train.sharding). The step is the same pure
`train_step`; only its jit carries shardings, and checkpoints hold the same TrainState on any mesh.
"""

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxsys.errors import ConfigError
from jaxsys.mlp import model as mlp_model
from jaxsys.mlp.adam import AdamConfig, make_optimizer
from jaxsys.mlp.data import Dataset, load
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
from jaxsys.train import sharding as sh
from jaxsys.train.interrupt import StopOnCtrlC, never_raises, save_on_interrupt

GRADS = ("hand", "autodiff")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    model: mlp_model.MLPConfig = mlp_model.MLPConfig()  # network shape, task, activation, matmul
    adam: AdamConfig = AdamConfig()  # optimizer kind and hyper-parameters
    grad: str = "hand"  # "hand" (derived backward) or "autodiff" (jax.grad)

    def __post_init__(self):
        if self.grad not in GRADS:
            raise ConfigError(f"grad must be one of {GRADS}, got {self.grad!r}")


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar, optimizer steps taken
    params: list  # model params (list of {"w", "b"})
    opt_state: Any  # Adam state (hand AdamState or optax's)


def init_state(key: jax.Array, cfg: StepConfig, dtype=jnp.float32) -> TrainState:
    params = mlp_model.init_params(key, cfg.model, dtype)
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


def _eval_step(params, x, y, cfg: mlp_model.MLPConfig) -> dict:
    out, _ = mlp_model.forward(params, x, cfg)
    return _metrics(mlp_model.loss_forward(out, y, cfg)[0], out, y, cfg)


eval_step = jax.jit(_eval_step, static_argnames=("cfg",))

# Fields that may change when a run resumes: they change neither the maths nor the batches.
_RESUMABLE = ("steps", "grad", "matmul", "log_every", "eval_every", "checkpoint_every")


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
    checkpoint_every: int = 1000  # steps between checkpoints (and one at the end)

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("steps", "batch", "log_every", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        # model, optimizer and gradient settings, checked here (placeholder input/output widths) so that
        # a bad value fails before the CLI makes a run directory or loads data
        self.step_config(in_out=(2, 2))

    def step_config(self, data: Dataset | None = None, *, in_out: tuple[int, int] | None = None) -> StepConfig:
        """The static part of the jitted step: the network (input/output widths from `data`), Adam
        and the gradient path."""
        n_in, n_out = in_out if in_out is not None else (data.x_train.shape[1], data.num_outputs)
        return StepConfig(
            mlp_model.MLPConfig((n_in, *self.hidden, n_out), self.task, self.activation, self.matmul),
            AdamConfig(self.optimizer, self.learning_rate),
            self.grad,
        )


# ------------------------------------------------------------------------------------- the mesh
def tensor_parallel_rules(num_layers: int) -> tuple[sh.Rule, ...]:
    """Name rules for params/0/w ... (and the Adam moments mu/0/w ...): even layers split by
    output rows (with their bias), the following odd layer by input columns."""
    rules: list[sh.Rule] = []
    for layer in range(num_layers):
        if layer % 2 == 0 and layer + 1 < num_layers:
            rules += [(rf"(^|/){layer}/w$", sh.P("model", None)), (rf"(^|/){layer}/b$", sh.P("model"))]
        elif layer % 2 == 1:
            rules.append((rf"(^|/){layer}/w$", sh.P(None, "model")))
    return tuple(rules)


class MeshStep(NamedTuple):
    mesh: Mesh
    state_shardings: Any  # a TrainState of NamedShardings
    batch_sharding: Any  # NamedSharding of x and y (rows over 'data')
    step: Callable  # (state, x_BxI, y_B) -> (state, metrics); state donated
    eval_step: Callable  # (params, x, y) -> metrics, replicated

    def put_state(self, state: TrainState) -> TrainState:
        return sh.put_tree(state, self.state_shardings)

    def abstract_state(self, state_like: TrainState) -> TrainState:
        """`like=` for Checkpointer.restore: restores straight onto this mesh."""
        return sh.abstract_tree(state_like, self.state_shardings)

    def batch(self, x_local, y_local, global_batch: int | None = None):
        """Global arrays from this process's rows (one process: the arrays as they are; the jit
        places them)."""
        if jax.process_count() == 1:
            return x_local, y_local
        b = sh.shard_batch({"x": np.asarray(x_local), "y": np.asarray(y_local)}, self.mesh, global_batch)
        return b["x"], b["y"]


@functools.lru_cache(maxsize=16)
def make_sharded_train_step(
    mesh: Mesh, cfg: StepConfig, *, fsdp: bool = False, fsdp_min_size: int = 2**16, dtype=np.float32
) -> MeshStep:
    """Shardings of the MLP train state on `mesh` and the jitted step / eval on it (cached: runs on
    the same mesh and config share one compile)."""
    if cfg.model.matmul != "xla" and mesh.size > 1:
        raise ConfigError("the MLP step on several devices needs matmul='xla' (XLA cannot partition the Pallas kernel)")
    like = jax.eval_shape(lambda: init_state(jax.random.key(0), cfg, dtype))
    rules = tensor_parallel_rules(cfg.model.num_layers)
    state_sh = sh.tree_shardings(like, mesh, rules=rules, fsdp=fsdp, fsdp_min_size=fsdp_min_size)
    rep = sh.replicated(mesh)
    batch_sh = sh.NamedSharding(mesh, sh.P("data") if mesh.shape["data"] > 1 else sh.P())
    step = sh.jit_sharded(
        functools.partial(_train_step, cfg=cfg), (state_sh, batch_sh, batch_sh), (state_sh, rep), donate_argnums=0
    )
    evaluate = sh.jit_sharded(functools.partial(_eval_step, cfg=cfg.model), (state_sh.params, rep, rep), rep)
    return MeshStep(mesh, state_sh, batch_sh, step, evaluate)


# ------------------------------------------------------------------------------------- the loop
def _batch_indices(n: int, batch: int, seed: int, step: int) -> np.ndarray:
    # a function of (seed, step) only, so a resumed run draws the same minibatches
    return np.random.default_rng([seed, step]).choice(n, batch, replace=False)


def _comparable(record: dict) -> dict:
    train = {k: v for k, v in record.get("train", {}).items() if k not in (*_RESUMABLE, "ckpt_every")}
    return {"train": train, "sizes": record.get("sizes"), "data": record.get("data")}


def _restore(ckpt: Checkpointer, record: dict, like: TrainState, run_dir: Path) -> TrainState:
    """The latest checkpoint restored into `like`; ConfigError (before reading any array) when it
    was written for a configuration that changes the maths."""
    saved = ckpt.read_meta().get("config", {})
    if _comparable(saved) != _comparable(json.loads(json.dumps(record))):
        ckpt.close()
        raise ConfigError(
            f"{run_dir} holds a checkpoint of another configuration ({_comparable(saved)}); this run is "
            f"{_comparable(record)}: use another --run-dir"
        )
    return ckpt.restore(like=like)[0]


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    data: Dataset | None = None,
    mesh: Mesh | None = None,
    fsdp: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    on_step: Callable[[int, TrainState], None] | None = None,
) -> dict:
    """Train on `data` (default: the task's real data set) on `mesh` (None: every device on
    'data'); writes config.json, metrics.jsonl, ckpt/ (orbax) and summary.json under run_dir and
    returns the summary. Resumes from the latest checkpoint in run_dir when there is one. Every
    process takes its rows of each batch; process 0 writes the files, all join the checkpoints.
    `on_step(step, state)` runs after every step. Ctrl-C lets the step in flight finish, saves a
    checkpoint at it, then raises KeyboardInterrupt (a second Ctrl-C raises at once, saving the
    newest whole state); one process only: the processes of a multi-process run may stop at
    different steps, so there the last periodic checkpoint stands."""
    log = never_raises(log)
    run_dir = Path(run_dir)
    mesh = sh.batch_mesh(cfg.batch) if mesh is None else mesh
    lead = jax.process_index() == 0
    data = load(cfg.task) if data is None else data
    scfg = cfg.step_config(data)
    if cfg.batch > len(data.x_train):
        raise ConfigError(f"batch {cfg.batch} exceeds the {len(data.x_train)} training examples")
    if cfg.batch % mesh.shape["data"]:
        raise ConfigError(f"batch {cfg.batch} is not divisible by the mesh data axis ({mesh.shape['data']})")
    mlp_model.validate_batch(data.x_train, data.y_train, scfg.model, where=f"{data.name} train set")
    mlp_model.validate_batch(data.x_test, data.y_test, scfg.model, where=f"{data.name} test set")
    mesh_cfg = sh.mesh_config(mesh)
    record = {"train": dataclasses.asdict(cfg), "sizes": list(scfg.model.sizes), "data": data.name}
    ms = make_sharded_train_step(mesh, scfg, fsdp=fsdp)
    run_dir.mkdir(parents=True, exist_ok=True)
    if lead:
        run = {"mesh": str(mesh_cfg), "fsdp": fsdp, "processes": jax.process_count()}
        atomic_write_json(run_dir / "config.json", {**record, **run})

    state = init_state(jax.random.key(cfg.seed), scfg)
    ckpt = Checkpointer(run_dir / "ckpt")
    start = 0
    if ckpt.latest_step() is not None:
        state = _restore(ckpt, record, ms.abstract_state(state), run_dir)
        start = int(sh.to_host(state.step))
        log(f"resumed from step {start} in {ckpt.directory} onto mesh {mesh_cfg}")
    else:
        state = ms.put_state(state)

    rows = sh.local_rows(mesh, cfg.batch)
    x_test, y_test = (sh.put_tree(np.asarray(a), sh.replicated(mesh)) for a in (data.x_test, data.y_test))
    n = len(data.x_train)
    metrics_w = MetricsWriter(run_dir / "metrics.jsonl") if lead else None
    where = f" [{mesh_cfg}]" if mesh.size > 1 else ""
    bar = Progress(total=cfg.steps, initial=start, desc=f"mlp {cfg.task}{where}", disable=not (progress and lead))
    t0 = time.perf_counter()
    last: dict = {}

    def host(m):
        return {k: float(v) for k, v in sh.to_host(m).items()}

    def save(step, state):
        if step not in ckpt.all_steps():
            ckpt.save(step, state, meta={"config": record, "mesh": str(mesh_cfg), **last})

    sync = sh.await_each_step(mesh)
    nproc, done = jax.process_count(), start
    ctrl_c = StopOnCtrlC(enabled=nproc == 1)
    try:
        with ctrl_c:
            for step in range(start, cfg.steps):
                idx = _batch_indices(n, cfg.batch, cfg.seed, step)[rows]  # this process's rows only
                state, m = ms.step(state, *ms.batch(data.x_train[idx], data.y_train[idx], cfg.batch))
                if sync:
                    jax.block_until_ready(m)
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    last = host(m)
                    bar.set(**last)
                    if metrics_w:
                        metrics_w.write(step=done, split="train", **last)
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    ev = host(ms.eval_step(state.params, x_test, y_test))
                    bar.set(**{f"test_{k}": v for k, v in ev.items()})
                    if metrics_w:
                        metrics_w.write(step=done, split="test", **ev)
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    save(done, state)
                bar.update()
                if on_step is not None:
                    on_step(done, state)
                if ctrl_c.requested:  # the first Ctrl-C: the step in flight has finished
                    break
            if ctrl_c.requested:
                ctrl_c.stop(state, done, start, save, log, bar.close)
    except KeyboardInterrupt:
        if not ctrl_c.stopped:  # a second Ctrl-C, or one that could not wait for the step
            if nproc == 1:
                save_on_interrupt(state, start, save, log)
            else:  # a save is collective: the other processes may be gone
                log(f"interrupted at step {done}: no checkpoint on Ctrl-C with several processes")
        raise
    finally:
        bar.close()
        if metrics_w:
            metrics_w.close()
        ckpt.close()
    seconds = time.perf_counter() - t0

    x_train, y_train = (sh.put_tree(np.asarray(a), sh.replicated(mesh)) for a in (data.x_train, data.y_train))
    ev = host(ms.eval_step(state.params, x_test, y_test))
    tr = host(ms.eval_step(state.params, x_train, y_train))
    summary = {
        "data": data.name,
        "task": cfg.task,
        "sizes": list(scfg.model.sizes),
        "steps": int(sh.to_host(state.step)),
        "resumed_from": start,
        "mesh": str(mesh_cfg),
        "fsdp": fsdp,
        "processes": jax.process_count(),
        "seconds": round(seconds, 2),
        "steps_per_s": round((cfg.steps - start) / seconds, 1) if cfg.steps > start else float("nan"),
        **{f"train_{k}": v for k, v in tr.items()},
        **{f"test_{k}": v for k, v in ev.items()},
    }
    if cfg.task == "regress":  # MSE loss is (1/2) mean sq. error in standardised units
        summary["test_rmse"] = float(np.sqrt(2 * ev["loss"]) * data.y_std)
    if lead:
        atomic_write_json(run_dir / "summary.json", summary)
        log(json.dumps(summary))
    return summary
