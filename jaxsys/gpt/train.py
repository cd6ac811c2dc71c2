"""Training of the GPT: a jitted step with donated state, Adam with linear decay, held-out
validation loss, progress, metrics JSONL, orbax checkpoints with bit-identical resume, and export of
weights.json + meta.json (+ safetensors). The one loop always runs on a device mesh (one device is a
one-device mesh).

    data = load_data("names", "docs", block_size=16)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, n_embd=64, n_head=4, n_layer=2, block_size=16)
    result = train(data, cfg, TrainConfig(steps=1000, batch_size=32), Path("runs/names"))

    step_cfg = tcfg.step_config(cfg)                                 # the static part of the step
    state = init_state(key, step_cfg)
    state, loss = train_step(state, tokens_BxT, targets_BxT, mask_BxT, cfg=step_cfg)

Resume: the state (params, Adam moments, step) is checkpointed every `checkpoint_every` steps; the
batch of step s is a pure function of (seed, s) (see `jaxsys.gpt.data`), so `train` on a run dir
that holds a checkpoint continues exactly as the uninterrupted run would, bit for bit.

On a mesh (jaxsys.train.sharding) the batch is split over 'data' and the layers Megatron-style over
'model' (attn_wq/wk/wv and mlp_fc1 by output rows = heads / hidden units, attn_wo and mlp_fc2 by
input columns); `fsdp=True` also splits every large matrix over 'data'. The step is the same pure
`train_step`; only its jit carries shardings, and checkpoints hold the same TrainState on any mesh.
"""

import dataclasses
import functools
import json
import math
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

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import model
from jaxsys.gpt.config import GPTConfig, StepConfig, TrainConfig
from jaxsys.gpt.data import Batch, GPTData
from jaxsys.nn.optim import adam as hand_adam
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
from jaxsys.train import sharding as sh
from jaxsys.train.checkpoint import check_resume_config
from jaxsys.train.interrupt import StopOnCtrlC, never_raises, save_on_interrupt


def learning_rate_schedule(tcfg: TrainConfig) -> optax.Schedule:
    """lr at update number t = 0, 1, ...: linear lr (1 - t/steps) (the microgpt default), cosine
    (linear warm-up to lr, then cosine decay to min_lr at `steps`), or constant."""
    if tcfg.schedule == "linear":
        dt = jnp.dtype(tcfg.dtype)  # optax's linear_schedule works in float32 even for float64 params

        def linear(count):
            return tcfg.lr * jnp.maximum(1.0 - jnp.asarray(count, dt) / tcfg.steps, 0.0)

        return linear
    if tcfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, tcfg.lr, tcfg.warmup_steps, max(tcfg.steps, tcfg.warmup_steps + 1), end_value=tcfg.min_lr
        )
    return optax.constant_schedule(tcfg.lr)


def make_optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    """Adam (no weight decay; optax's or the hand-written one) with the schedule of `tcfg`, after
    optional global-norm clipping."""
    adam_fn = hand_adam if tcfg.optimizer == "hand" else optax.adam
    adam = adam_fn(learning_rate_schedule(tcfg), b1=tcfg.beta1, b2=tcfg.beta2, eps=tcfg.eps)
    if tcfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(tcfg.grad_clip), adam)
    return adam


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: updates applied so far
    params: dict  # name -> array (see jaxsys.gpt.model)
    opt_state: Any  # optax state of make_optimizer(tcfg)


def init_state(key: jax.Array, cfg: StepConfig) -> TrainState:
    params = model.init_params(key, cfg.model, dtype=jnp.dtype(cfg.train.dtype))
    return TrainState(jnp.zeros([], jnp.int32), params, make_optimizer(cfg.train).init(params))


def _train_step(state: TrainState, tokens_BxT, targets_BxT, mask_BxT, cfg: StepConfig) -> tuple[TrainState, jax.Array]:
    mask = mask_BxT.astype(state.params["wte"].dtype)
    grad_fn = model.loss_and_grads_fn(cfg.train.engine, cfg.train.matmul_dtype)
    loss, grads = grad_fn(state.params, tokens_BxT, targets_BxT, mask, cfg.model)
    updates, opt_state = make_optimizer(cfg.train).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss


# One compile per (shapes, cfg); the old state's buffers are reused for the new one.
train_step = jax.jit(_train_step, static_argnames=("cfg",), donate_argnames=("state",))


def _eval_step(params, tokens_BxT, targets_BxT, mask_BxT, cfg: GPTConfig):
    mask = mask_BxT.astype(params["wte"].dtype)
    n = jnp.sum(mask)
    return model.loss_fn(params, tokens_BxT, targets_BxT, mask, cfg) * n, n


# (summed cross-entropy, number of unmasked targets) of one batch
eval_step = jax.jit(_eval_step, static_argnames=("cfg",))


def evaluate(params: dict, batches: list[Batch], cfg: GPTConfig, step: Callable | None = None) -> float:
    """Mean cross-entropy over all unmasked targets of `batches` (`step`: the eval step to use)."""
    step = step or functools.partial(eval_step, cfg=cfg)
    sums = sh.to_host([step(params, *b) for b in batches])  # all dispatched, then one wait
    tot, cnt = (float(np.sum([s[i] for s in sums])) for i in (0, 1))
    if cnt == 0:
        raise DataError("validation batches contain no target positions")
    return tot / cnt


# ------------------------------------------------------------------------------------- the mesh
def state_pspecs(cfg: StepConfig, mesh_shape: dict, *, fsdp: bool = False, fsdp_min_size: int = 2**16) -> TrainState:
    """PartitionSpecs of the whole train state (pure: no devices). Raises ConfigError when n_embd
    (or 4 n_embd) is not divisible by the 'model' axis."""
    like = jax.eval_shape(lambda: init_state(jax.random.key(0), cfg))
    rules = sh.GPT_TENSOR_PARALLEL_RULES
    return sh.tree_pspecs(like, mesh_shape, rules=rules, fsdp=fsdp, fsdp_min_size=fsdp_min_size)


class MeshStep(NamedTuple):
    mesh: Mesh
    state_shardings: Any  # a TrainState of NamedShardings
    batch_sharding: Any  # NamedSharding of tokens/targets/mask (rows over 'data')
    step: Callable  # (state, tokens, targets, mask) -> (state, loss); state donated
    eval_step: Callable  # (params, tokens, targets, mask) -> (loss * n, n), replicated

    def put_state(self, state: TrainState) -> TrainState:
        return sh.put_tree(state, self.state_shardings)

    def abstract_state(self, state_like: TrainState) -> TrainState:
        """`like=` for Checkpointer.restore: restores straight onto this mesh."""
        return sh.abstract_tree(state_like, self.state_shardings)

    def batch(self, b: Batch, global_batch: int | None = None) -> Batch:
        """Global arrays from this process's rows of a batch (one process: the arrays as they are;
        the jit places them)."""
        if jax.process_count() == 1:
            return b
        return Batch(*sh.shard_batch(tuple(np.asarray(a) for a in b), self.mesh, global_batch))


@functools.lru_cache(maxsize=16)
def make_sharded_train_step(mesh: Mesh, cfg: StepConfig, *, fsdp: bool = False, fsdp_min_size: int = 2**16) -> MeshStep:
    """Shardings of the GPT train state on `mesh` and the jitted step / eval on it (cached: runs on
    the same mesh and config share one compile)."""
    like = jax.eval_shape(lambda: init_state(jax.random.key(0), cfg))
    state_sh = sh.tree_shardings(like, mesh, rules=sh.GPT_TENSOR_PARALLEL_RULES, fsdp=fsdp, fsdp_min_size=fsdp_min_size)
    rep = sh.replicated(mesh)
    bsh = sh.NamedSharding(mesh, sh.P("data") if mesh.shape["data"] > 1 else sh.P())
    step = functools.partial(_train_step, cfg=cfg)
    step = sh.jit_sharded(step, (state_sh, bsh, bsh, bsh), (state_sh, rep), donate_argnums=0)
    sums = sh.jit_sharded(functools.partial(_eval_step, cfg=cfg.model), (state_sh.params, bsh, bsh, bsh), (rep, rep))
    return MeshStep(mesh, state_sh, bsh, step, sums)


# ---------------------------------------------------------------------------- checks, checkpoints
class TrainResult(NamedTuple):
    state: TrainState
    history: list  # [{"step", "train_seconds", "wall_seconds", "train_loss", "val_loss"}]
    summary: dict  # headline numbers (JSON-able)


# Fields that may change between an interrupted run and its resumption (they do not change the maths).
_RESUMABLE_CHANGES = ("engine", "matmul_dtype", "eval_every", "eval_batches", "checkpoint_every", "log_every")


def _config_meta(cfg: GPTConfig, tcfg: TrainConfig) -> dict:
    train = {k: v for k, v in dataclasses.asdict(tcfg).items() if k not in _RESUMABLE_CHANGES}
    return json.loads(json.dumps({"model": dataclasses.asdict(cfg), "train": train}))


def check_configs(data: GPTData, cfg: GPTConfig, tcfg: TrainConfig) -> None:
    if cfg.vocab_size != data.tokenizer.vocab_size:
        raise ConfigError(
            f"model vocab_size={cfg.vocab_size} does not match the data's tokenizer "
            f"vocab_size={data.tokenizer.vocab_size}"
        )
    if data.train.seq_len > cfg.block_size:
        raise ConfigError(
            f"data sequences of length {data.train.seq_len} exceed the model's block_size={cfg.block_size}"
        )
    if len(data.train) < 1:
        raise DataError("the training split is empty")
    b = data.train.batch(0, 1, tcfg.seed)
    params = jax.eval_shape(lambda: model.init_params(jax.random.key(0), cfg))
    model.validate_batch(params, b.tokens, b.targets, b.mask, cfg)


def open_checkpoints(out: Path, cfg: GPTConfig, tcfg: TrainConfig, like: Any) -> tuple[Checkpointer, Any]:
    """(Checkpointer of out/ckpt, the latest checkpointed state restored into `like`, or None when
    there is none). Raises ConfigError (after closing the checkpointer, before reading any array)
    when the checkpoints were written with a configuration that changes the maths."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(out / "ckpt", max_to_keep=2)
    if ckpt.latest_step() is None:
        return ckpt, None
    try:
        check_resume_config(out, ckpt.read_meta().get("config"), _config_meta(cfg, tcfg), advice="use another run dir")
    except BaseException:
        ckpt.close()
        raise
    return ckpt, ckpt.restore(like=like)[0]


# ------------------------------------------------------------------------------------- the loop
def train(
    data: GPTData,
    cfg: GPTConfig,
    tcfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    mesh: Mesh | None = None,
    fsdp: bool = False,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    on_step: Callable[[int, TrainState], None] | None = None,
    export: bool = True,
) -> TrainResult:
    """Train `cfg` on `data` for `tcfg.steps` steps on `mesh` (None: every device on 'data').

    With `out_dir`: metrics.jsonl, orbax checkpoints under ckpt/, and at the end weights.json +
    meta.json (atomic, jaxsys.gpt.weights_io) and model.safetensors, plus train_summary.json.
    When out_dir/ckpt holds a checkpoint the run continues from it (ConfigError if it was written
    with a configuration that changes the maths). Every process takes its rows of each batch;
    process 0 writes the files, all join the checkpoint writes. `on_step(step, state)` runs after
    every step (tests use it to interrupt a run). Ctrl-C lets the step in flight finish, saves a
    checkpoint at it, then raises KeyboardInterrupt (a second Ctrl-C raises at once, saving the
    newest whole state); one process only: the processes of a multi-process run may stop at
    different steps, so there the last periodic checkpoint stands.
    """
    check_configs(data, cfg, tcfg)
    log = never_raises(log or (lambda s: None))
    mesh = sh.batch_mesh(tcfg.batch_size) if mesh is None else mesh
    lead = jax.process_index() == 0
    B, T = tcfg.batch_size, data.train.seq_len
    if B % mesh.shape["data"]:
        raise ConfigError(f"batch size {B} is not divisible by the mesh data axis ({mesh.shape['data']})")
    mesh_cfg = sh.mesh_config(mesh)
    step_cfg = tcfg.step_config(cfg)
    ms = make_sharded_train_step(mesh, step_cfg, fsdp=fsdp)
    rows = sh.local_rows(mesh, B)
    state = init_state(jax.random.key(tcfg.seed), step_cfg)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = metrics = restored = None
    start = 0
    if out is not None:
        ckpt, restored = open_checkpoints(out, cfg, tcfg, like=ms.abstract_state(state))
        if restored is not None:
            state, start = restored, int(sh.to_host(restored.step))
            log(f"resumed from step {start} of {tcfg.steps} ({out / 'ckpt'}, mesh {mesh_cfg})")
        if lead:
            metrics = MetricsWriter(out / "metrics.jsonl")
            event = "resume" if start else "start"
            metrics.write(event=event, step=start, mesh=str(mesh_cfg), processes=jax.process_count())
    if restored is None:
        state = ms.put_state(state)

    def place(b: Batch) -> Batch:  # this process's rows, on the mesh
        b = Batch(*(np.asarray(a)[rows] for a in b))
        return ms.batch(b, B) if jax.process_count() > 1 else Batch(*jax.device_put(tuple(b), ms.batch_sharding))

    eval_batches = data.val.eval_batches(B, tcfg.eval_batches) if data.val is not None else []
    eval_batches = [place(b) for b in eval_batches]
    schedule = learning_rate_schedule(tcfg)
    history: list = []
    where = f" [{mesh_cfg}]" if mesh.size > 1 else ""
    bar = Progress(total=tcfg.steps, initial=start, desc=f"gpt train{where}", disable=not (progress and lead))
    t_wall0 = time.perf_counter()
    train_seconds = 0.0  # time in train steps only (no eval, no checkpoint), incl. the first compile
    compile_seconds = 0.0
    pending: list = []  # losses not yet fetched from the device
    last_loss, val_loss = float("nan"), None
    t_mark, steps_in_mark = time.perf_counter(), 0

    def save(step: int, state: TrainState) -> None:
        if ckpt is not None and ckpt.latest_step() != step:
            ckpt.save(step, state, meta={"config": _config_meta(cfg, tcfg), "step": step})

    def flush(step: int) -> None:
        nonlocal last_loss, t_mark, steps_in_mark, train_seconds
        if pending:
            last_loss = float(np.mean([float(sh.to_host(x)) for x in pending]))  # waits for the device
            pending.clear()
        now = time.perf_counter()
        dt = now - t_mark
        train_seconds += dt
        tps = steps_in_mark * B * T / dt if dt > 0 and steps_in_mark else float("nan")
        t_mark, steps_in_mark = now, 0
        bar.set(loss=last_loss, tok_s=round(tps) if math.isfinite(tps) else tps)
        if metrics is not None:
            lr = float(schedule(step - 1))
            metrics.write(step=step, loss=last_loss, lr=lr, tokens_per_s=tps, train_seconds=train_seconds)

    sync = sh.await_each_step(mesh)
    step, nproc = start, jax.process_count()
    ctrl_c = StopOnCtrlC(enabled=nproc == 1)
    try:
        with ctrl_c:
            for step in range(start + 1, tcfg.steps + 1):
                b = ms.batch(data.train.batch(step - 1, B, tcfg.seed, rows=rows), B)
                state, loss = ms.step(state, *b)
                pending.append(loss)
                steps_in_mark += 1
                if sync:
                    jax.block_until_ready(loss)
                if step == start + 1:  # the first call compiles: time it on its own
                    jax.block_until_ready(loss)
                    compile_seconds = time.perf_counter() - t_mark
                    flush(step)
                elif step % tcfg.log_every == 0 or step == tcfg.steps:
                    flush(step)
                bar.update()
                if eval_batches and ((tcfg.eval_every and step % tcfg.eval_every == 0) or step == tcfg.steps):
                    if pending or steps_in_mark:
                        flush(step)
                    val_loss = evaluate(state.params, eval_batches, cfg, step=ms.eval_step)
                    bar.set(val=val_loss)
                    if metrics is not None:
                        metrics.write(step=step, val_loss=val_loss, train_seconds=train_seconds)
                    wall = time.perf_counter() - t_wall0
                    history.append(
                        dict(
                            step=step,
                            train_seconds=train_seconds,
                            wall_seconds=wall,
                            train_loss=last_loss,
                            val_loss=val_loss,
                        )
                    )
                    t_mark = time.perf_counter()
                if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step != tcfg.steps:
                    if pending or steps_in_mark:
                        flush(step)
                    save(step, state)
                    t_mark = time.perf_counter()
                if on_step is not None:
                    on_step(step, state)
                if ctrl_c.requested:  # the first Ctrl-C: the step in flight has finished
                    break
            if ctrl_c.requested:
                ctrl_c.stop(state, step, start, save if ckpt is not None else None, log, bar.close)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) and not ctrl_c.stopped and ckpt is not None:
            if nproc == 1:  # a second Ctrl-C, or one that could not wait for the step
                save_on_interrupt(state, start, save, log)
            elif step > start:  # a save is collective: the other processes may be gone
                log(f"interrupted at step {step}: no checkpoint on Ctrl-C with several processes")
        bar.close()
        if ckpt is not None:
            ckpt.close()
        if metrics is not None:
            metrics.close()
        raise
    if pending or steps_in_mark:
        flush(step)
    bar.close()
    run_steps = tcfg.steps - start
    steady = max(train_seconds - compile_seconds, 1e-9)
    summary = {
        "steps": tcfg.steps,
        "start_step": start,
        "engine": tcfg.engine,
        "dtype": tcfg.dtype,
        "matmul_dtype": tcfg.matmul_dtype,
        "mesh": str(mesh_cfg),
        "fsdp": fsdp,
        "processes": jax.process_count(),
        "train_loss": last_loss,
        "val_loss": val_loss,
        "train_seconds": train_seconds,
        "compile_seconds": compile_seconds,
        "wall_seconds": time.perf_counter() - t_wall0,
        "tokens_per_step": B * T,
        "tokens_per_s": (run_steps - 1) * B * T / steady if run_steps > 1 else float("nan"),
        "n_params": int(sum(np.prod(p.shape) for p in state.params.values())),
    }
    if ckpt is not None:
        if start < tcfg.steps:
            save(tcfg.steps, state)
        ckpt.close()
    if metrics is not None:
        metrics.close()
    if out is not None:
        params = sh.to_host(state.params) if export else None  # a collective with several processes
        if lead and export:
            export_model(out, params, cfg, data.tokenizer)
        if lead:
            record = dict(
                model=dataclasses.asdict(cfg), train=dataclasses.asdict(tcfg), data=data.info, history=history
            )
            atomic_write_json(out / "train_summary.json", {**summary, **record})
    log(
        f"trained {tcfg.steps} steps{where}: train loss {last_loss:.4f}"
        + (f", val loss {val_loss:.4f}" if val_loss is not None else "")
        + f", {summary['tokens_per_s']:.0f} tokens/s"
    )
    return TrainResult(state, history, summary)


def export_model(out_dir: str | Path, params: dict, cfg: GPTConfig, tokenizer) -> None:
    """weights.json + meta.json (atomic) and model.safetensors in `out_dir`."""
    from jaxsys.gpt import weights_io

    host = {k: np.asarray(v) for k, v in params.items()}
    weights_io.save_model(out_dir, host, cfg, tokenizer)
    weights_io.save_safetensors(Path(out_dir) / "model.safetensors", host)
