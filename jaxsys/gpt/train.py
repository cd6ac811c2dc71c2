"""Training loop of the GPT: a jitted step with donated state, Adam with linear decay, held-out
validation loss, progress, metrics JSONL, orbax checkpoints with bit-identical resume, and export of
weights.json + meta.json (+ safetensors).

    data = load_data("names.txt", "docs", block_size=16)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, n_embd=64, n_head=4, n_layer=2, block_size=16)
    result = train(data, cfg, TrainConfig(steps=1000, batch_size=32), out_dir=Path("runs/names"))

Resume: the state (params, Adam moments, step) is checkpointed every `checkpoint_every` steps; the
batch of step s is a pure function of (seed, s) (see `jaxsys.gpt.data`), so `train(..., resume=True)`
from the latest checkpoint continues exactly as the uninterrupted run would, bit for bit.
"""

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import model
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.data import Batch, GPTData
from jaxsys.nn.optim import adam as hand_adam
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json

ENGINES = ("hand", "autodiff")
OPTIMIZERS = ("optax", "hand")
SCHEDULES = ("linear", "cosine", "constant")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps in the whole run (the linear decay reaches 0 here)
    batch_size: int = 32  # sequences per step (B)
    lr: float = 0.01  # peak Adam learning rate
    beta1: float = 0.85  # Adam first-moment decay
    beta2: float = 0.99  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator epsilon
    schedule: str = "linear"  # "linear": lr (1 - step/steps); "cosine": warmup then cosine to min_lr; "constant"
    warmup_steps: int = 0  # linear warm-up steps of the cosine schedule
    min_lr: float = 0.0  # final learning rate of the cosine schedule
    grad_clip: float = 0.0  # clip the global gradient norm to this (0: off)
    engine: str = "hand"  # "hand": hand-derived backward; "autodiff": jax.grad of the same forward
    optimizer: str = "optax"  # "optax": optax.adam; "hand": the hand-written jaxsys.nn.optim.adam
    dtype: str = "float32"  # parameter/compute dtype ("float64" needs jax_enable_x64)
    matmul_dtype: str = "float32"  # "bfloat16": parameter matmuls on bf16 operands, accumulated in dtype
    seed: int = 0  # initialisation and data order
    eval_every: int = 100  # validation loss every N steps (0: only at the end)
    eval_batches: int = 20  # validation batches per evaluation (at most)
    checkpoint_every: int = 0  # orbax checkpoint every N steps (0: only at the end); needs out_dir
    log_every: int = 10  # metrics record + progress refresh every N steps

    def validate(self) -> "TrainConfig":
        for name in (
            "steps",
            "batch_size",
            "warmup_steps",
            "eval_every",
            "eval_batches",
            "checkpoint_every",
            "log_every",
            "seed",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"TrainConfig.{name} must be an int, got {v!r}")
        for name in ("steps", "batch_size", "eval_batches", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"TrainConfig.lr must be a positive number, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"Adam decays must lie in [0, 1), got beta1={self.beta1}, beta2={self.beta2}")
        if not self.eps > 0 or self.min_lr < 0 or self.grad_clip < 0:
            raise ConfigError(
                f"need eps > 0, min_lr >= 0, grad_clip >= 0; got eps={self.eps}, "
                f"min_lr={self.min_lr}, grad_clip={self.grad_clip}"
            )
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; expected one of {ENGINES}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; expected one of {DTYPES}")
        if self.matmul_dtype not in model.MATMUL_DTYPES:
            raise ConfigError(f"unknown matmul_dtype {self.matmul_dtype!r}; expected one of {model.MATMUL_DTYPES}")
        if self.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise ConfigError(
                "dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 or jax.config.update('jax_enable_x64', True)"
            )
        return self


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


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates applied so far
    params: dict  # name -> array (see jaxsys.gpt.model)
    opt_state: Any  # optax state of make_optimizer(tcfg)


def init_state(cfg: GPTConfig, tcfg: TrainConfig) -> TrainState:
    params = model.init_params(jax.random.PRNGKey(tcfg.seed), cfg, dtype=jnp.dtype(tcfg.dtype))
    return TrainState(jnp.zeros([], jnp.int32), params, make_optimizer(tcfg).init(params))


def _train_step(
    state: TrainState, tokens_BxT, targets_BxT, mask_BxT, cfg: GPTConfig, tcfg: TrainConfig
) -> tuple[TrainState, jax.Array]:
    mask = mask_BxT.astype(state.params["wte"].dtype)
    grad_fn = model.loss_and_grads_fn(tcfg.engine, tcfg.matmul_dtype)
    loss, grads = grad_fn(state.params, tokens_BxT, targets_BxT, mask, cfg)
    updates, opt_state = make_optimizer(tcfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss


def step_config(tcfg: TrainConfig) -> TrainConfig:
    """`tcfg` with the fields the step does not read set to defaults, so that runs differing only
    in logging/eval/checkpoint cadence share one compiled step."""
    return dataclasses.replace(tcfg, **{f: getattr(TrainConfig, f) for f in _LOOP_ONLY})


_LOOP_ONLY = ("eval_every", "eval_batches", "checkpoint_every", "log_every")

# One compile per (shapes, cfg, tcfg); the old state's buffers are reused for the new one.
train_step = jax.jit(_train_step, static_argnames=("cfg", "tcfg"), donate_argnames=("state",))


def _eval_sums(params, tokens_BxT, targets_BxT, mask_BxT, cfg: GPTConfig):
    mask = mask_BxT.astype(params["wte"].dtype)
    n = jnp.sum(mask)
    return model.loss_fn(params, tokens_BxT, targets_BxT, mask, cfg) * n, n


eval_sums = jax.jit(_eval_sums, static_argnames=("cfg",))


def evaluate(params: dict, batches: list[Batch], cfg: GPTConfig) -> float:
    """Mean cross-entropy over all unmasked targets of `batches`."""
    tot, cnt = 0.0, 0.0
    sums = [eval_sums(params, b.tokens, b.targets, b.mask, cfg) for b in batches]
    for s, n in sums:
        tot += float(s)
        cnt += float(n)
    if cnt == 0:
        raise DataError("validation batches contain no target positions")
    return tot / cnt


class TrainResult(NamedTuple):
    state: TrainState
    history: list  # [{"step", "train_seconds", "wall_seconds", "train_loss", "val_loss"}]
    summary: dict  # headline numbers (JSON-able)


# Fields that may change between an interrupted run and its resumption (they do not change the maths).
_RESUMABLE_CHANGES = ("engine", "matmul_dtype", "eval_every", "eval_batches", "checkpoint_every", "log_every")


def _config_meta(cfg: GPTConfig, tcfg: TrainConfig) -> dict:
    train = {k: v for k, v in dataclasses.asdict(tcfg).items() if k not in _RESUMABLE_CHANGES}
    return {"model": dataclasses.asdict(cfg), "train": train}


def check_configs(data: GPTData, cfg: GPTConfig, tcfg: TrainConfig) -> None:
    cfg.validate()
    tcfg.validate()
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
    params = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), cfg))
    model.validate_batch(params, b.tokens, b.targets, b.mask, cfg)


def open_checkpoints(out: Path, cfg: GPTConfig, tcfg: TrainConfig, like: Any, resume: bool) -> tuple[Checkpointer, Any]:
    """(Checkpointer of out/ckpt, the latest checkpointed state restored into `like` or None when
    there is none) for `train` and `jaxsys.gpt.sharded.train_sharded`. Raises ConfigError (after
    closing the checkpointer) when checkpoints exist without `resume`, so that two runs never mix,
    or when they were written with a configuration that changes the maths."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(out / "ckpt", max_to_keep=2)
    latest = ckpt.latest_step()
    if latest is None:
        return ckpt, None
    if not resume:
        ckpt.close()
        raise ConfigError(
            f"{out} already holds checkpoints (latest step {latest}); pass "
            f"resume=True (--resume) to continue, or use a fresh output folder"
        )
    state, meta = ckpt.restore(like=like)
    want = _config_meta(cfg, tcfg)
    if meta.get("config") != json.loads(json.dumps(want)):
        ckpt.close()
        raise ConfigError(
            f"checkpoint in {out / 'ckpt'} was written with a different configuration: {meta.get('config')} != {want}"
        )
    return ckpt, state


def save_checkpoint(ckpt: Checkpointer, step: int, state: TrainState, cfg: GPTConfig, tcfg: TrainConfig) -> None:
    ckpt.save(step, state, meta={"config": _config_meta(cfg, tcfg), "step": step})


def train(
    data: GPTData,
    cfg: GPTConfig,
    tcfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    on_step: Callable[[int, TrainState], None] | None = None,
    export: bool = True,
) -> TrainResult:
    """Train `cfg` on `data` for `tcfg.steps` steps.

    With `out_dir`: metrics.jsonl, orbax checkpoints under ckpt/, and at the end weights.json +
    meta.json (atomic, jaxsys.gpt.weights_io) and model.safetensors, plus train_summary.json.
    `resume=True` continues from the latest checkpoint in `out_dir/ckpt` (a fresh start if none);
    without it, an existing checkpoint is an error so that two runs never mix.
    `on_step(step, state)` is called after every step (tests use it to interrupt a run); Ctrl-C
    saves a checkpoint at the current step before re-raising.
    """
    check_configs(data, cfg, tcfg)
    log = log or (lambda s: None)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = metrics = None
    state = init_state(cfg, tcfg)
    start = 0
    if out is not None:
        ckpt, restored = open_checkpoints(out, cfg, tcfg, like=state, resume=resume)
        if restored is not None:
            state = restored
            start = int(state.step)
            log(f"resumed from step {start} of {tcfg.steps} ({out / 'ckpt'})")
        elif resume:
            log(f"no checkpoint in {out / 'ckpt'}; starting from step 0")
        metrics = MetricsWriter(out / "metrics.jsonl")
        metrics.write(event="resume" if start else "start", step=start)
    elif resume:
        raise ConfigError("resume needs an output folder with checkpoints")

    eval_batches = data.val.eval_batches(tcfg.batch_size, tcfg.eval_batches) if data.val is not None else []
    eval_batches = [Batch(*(jnp.asarray(a) for a in b)) for b in eval_batches]
    B, T = tcfg.batch_size, data.train.seq_len
    step_tcfg = step_config(tcfg)
    schedule = learning_rate_schedule(tcfg)
    history: list = []
    bar = Progress(total=tcfg.steps, initial=start, desc="gpt train", disable=not progress)
    t_wall0 = time.perf_counter()
    train_seconds = 0.0  # time in train steps only (no eval, no checkpoint), incl. the first compile
    compile_seconds = 0.0
    pending: list = []  # losses not yet fetched from the device
    last_loss = float("nan")
    val_loss = None
    t_mark = time.perf_counter()
    steps_in_mark = 0

    def _save(step: int) -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, step, state, cfg, tcfg)

    def _flush(step: int) -> None:
        nonlocal last_loss, t_mark, steps_in_mark, train_seconds
        if pending:
            vals = [float(x) for x in pending]  # waits for the device
            pending.clear()
            last_loss = float(np.mean(vals))
        now = time.perf_counter()
        dt = now - t_mark
        train_seconds += dt
        tps = steps_in_mark * B * T / dt if dt > 0 and steps_in_mark else float("nan")
        t_mark, steps_in_mark = now, 0
        bar.set(loss=last_loss, tok_s=round(tps) if math.isfinite(tps) else tps)
        if metrics is not None:
            metrics.write(
                step=step, loss=last_loss, lr=float(schedule(step - 1)), tokens_per_s=tps, train_seconds=train_seconds
            )

    step = start
    try:
        for step in range(start + 1, tcfg.steps + 1):
            b = data.train.batch(step - 1, B, tcfg.seed)
            state, loss = train_step(state, b.tokens, b.targets, b.mask, cfg=cfg, tcfg=step_tcfg)
            pending.append(loss)
            steps_in_mark += 1
            if step == start + 1:  # the first call compiles: time it on its own
                jax.block_until_ready(loss)
                compile_seconds = time.perf_counter() - t_mark
                _flush(step)
            elif step % tcfg.log_every == 0 or step == tcfg.steps:
                _flush(step)
            bar.update()
            do_eval = eval_batches and ((tcfg.eval_every and step % tcfg.eval_every == 0) or step == tcfg.steps)
            if do_eval:
                if pending or steps_in_mark:
                    _flush(step)
                val_loss = evaluate(state.params, eval_batches, cfg)
                bar.set(val=val_loss)
                if metrics is not None:
                    metrics.write(step=step, val_loss=val_loss, train_seconds=train_seconds)
                history.append(
                    {
                        "step": step,
                        "train_seconds": train_seconds,
                        "wall_seconds": time.perf_counter() - t_wall0,
                        "train_loss": last_loss,
                        "val_loss": val_loss,
                    }
                )
                t_mark = time.perf_counter()
            if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step != tcfg.steps:
                if pending or steps_in_mark:
                    _flush(step)
                _save(step)
                t_mark = time.perf_counter()
            if on_step is not None:
                on_step(step, state)
    except KeyboardInterrupt:
        bar.close()
        if ckpt is not None and int(state.step) > start:
            jax.block_until_ready(state)
            _save(int(state.step))
            log(f"interrupted: checkpoint saved at step {int(state.step)}")
        if ckpt is not None:
            ckpt.close()
            metrics.close()
        raise
    except BaseException:
        bar.close()
        if ckpt is not None:
            ckpt.close()
        if metrics is not None:
            metrics.close()
        raise
    if pending or steps_in_mark:
        _flush(step)
    bar.close()
    run_steps = tcfg.steps - start
    steady = max(train_seconds - compile_seconds, 1e-9)
    summary = {
        "steps": tcfg.steps,
        "start_step": start,
        "engine": tcfg.engine,
        "dtype": tcfg.dtype,
        "matmul_dtype": tcfg.matmul_dtype,
        "train_loss": last_loss,
        "val_loss": val_loss,
        "train_seconds": train_seconds,
        "compile_seconds": compile_seconds,
        "wall_seconds": time.perf_counter() - t_wall0,
        "tokens_per_step": B * T,
        "tokens_per_s": (run_steps - 1) * B * T / steady if run_steps > 1 else float("nan"),
        "n_params": int(sum(np.prod(p.shape) for p in state.params.values())),
    }
    if out is not None:
        if start < tcfg.steps:
            _save(tcfg.steps)
        ckpt.close()
        metrics.close()
        if export:
            export_model(out, state.params, cfg, data.tokenizer)
        atomic_write_json(
            out / "train_summary.json",
            {
                **summary,
                "model": dataclasses.asdict(cfg),
                "train": dataclasses.asdict(tcfg),
                "data": data.info,
                "history": history,
            },
        )
    log(
        f"trained {tcfg.steps} steps: train loss {last_loss:.4f}"
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
