"""The GPT train step on a device mesh (jaxsys.train.sharding): batch over 'data', Megatron tensor
parallel over 'model' (layer{i}.attn_wq/wk/wv and mlp_fc1 split by output rows = heads / hidden
units, attn_wo and mlp_fc2 by input columns), optional FSDP of every large matrix over 'data'.
The step is `jaxsys.gpt.train._train_step` unchanged; only the jit carries shardings.

    mesh = make_mesh(parse_mesh("data=2,model=2"))
    sg = make_sharded_train_step(mesh, cfg, tcfg)
    state = sg.put_state(init_state(cfg, tcfg))
    state, loss = sg.step(state, *sg.batch(local_batch, global_batch=tcfg.batch_size))

`train_sharded` is the training loop of `jaxsys gpt train --mesh ...` (one or several processes);
its checkpoints hold the same TrainState as `jaxsys.gpt.train.train`, so either resumes the other.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.data import Batch, GPTData
from jaxsys.gpt.train import (
    TrainConfig,
    TrainResult,
    TrainState,
    _eval_sums,
    _train_step,
    check_configs,
    export_model,
    init_state,
    open_checkpoints,
    save_checkpoint,
)
from jaxsys.train import MetricsWriter, Progress, atomic_write_json
from jaxsys.train import sharding as sh

RULES = sh.GPT_TENSOR_PARALLEL_RULES


class ShardedGPT(NamedTuple):
    mesh: Mesh
    state_shardings: Any  # a TrainState of NamedShardings
    batch_sharding: Any  # NamedSharding of tokens/targets/mask (rows over 'data')
    step: Callable  # (state, tokens, targets, mask) -> (state, loss); state donated
    eval_sums: Callable  # (params, tokens, targets, mask) -> (loss * n, n), replicated

    def put_state(self, state: TrainState) -> TrainState:
        return sh.put_tree(state, self.state_shardings)

    def abstract_state(self, state_like: TrainState) -> TrainState:
        """`like=` for Checkpointer.restore: restores straight onto this mesh."""
        return sh.abstract_tree(state_like, self.state_shardings)

    def batch(self, b: Batch, global_batch: int | None = None) -> Batch:
        """Global arrays from this process's rows of a batch."""
        return Batch(*sh.shard_batch(tuple(np.asarray(a) for a in b), self.mesh, global_batch))


def state_pspecs(
    cfg: GPTConfig, tcfg: TrainConfig, mesh_shape: dict, *, fsdp: bool = False, fsdp_min_size: int = 2**16
) -> TrainState:
    """PartitionSpecs of the whole train state (pure: no devices)."""
    like = jax.eval_shape(lambda: init_state(cfg, tcfg))
    return sh.tree_pspecs(like, mesh_shape, rules=RULES, fsdp=fsdp, fsdp_min_size=fsdp_min_size)


def make_sharded_train_step(
    mesh: Mesh, cfg: GPTConfig, tcfg: TrainConfig, *, fsdp: bool = False, fsdp_min_size: int = 2**16
) -> ShardedGPT:
    """Shardings of the GPT train state on `mesh` and the jitted sharded step / eval sums.
    Raises ConfigError when n_embd (or 4 n_embd) is not divisible by the 'model' axis."""
    cfg.validate()
    tcfg.validate()
    like = jax.eval_shape(lambda: init_state(cfg, tcfg))
    state_sh = sh.tree_shardings(like, mesh, rules=RULES, fsdp=fsdp, fsdp_min_size=fsdp_min_size)
    rep = sh.replicated(mesh)
    batch_sh = NamedSharding(mesh, P("data") if mesh.shape["data"] > 1 else P())
    step = sh.jit_sharded(
        functools.partial(_train_step, cfg=cfg, tcfg=tcfg),
        (state_sh, batch_sh, batch_sh, batch_sh),
        (state_sh, rep),
        donate_argnums=0,
    )
    sums = sh.jit_sharded(
        functools.partial(_eval_sums, cfg=cfg), (state_sh.params, batch_sh, batch_sh, batch_sh), (rep, rep)
    )
    return ShardedGPT(mesh, state_sh, batch_sh, step, sums)


def _local(split, step: int, batch_size: int, seed: int, rows: slice) -> Batch:
    """This process's rows of the batch of `step`: only those sequences are gathered."""
    return split._gather(split.indices(step, batch_size, seed)[rows])


def train_sharded(
    data: GPTData,
    cfg: GPTConfig,
    tcfg: TrainConfig,
    out_dir: str | Path | None,
    mesh: Mesh,
    *,
    resume: bool = False,
    fsdp: bool = False,
    log: Callable | None = print,
    progress: bool = True,
    export: bool = True,
    on_step: Callable[[int, TrainState], None] | None = None,
) -> TrainResult:
    """`jaxsys.gpt.train.train` on a mesh: the same batches (pure in (seed, step)), metrics,
    checkpoints, export and summary; process 0 writes the files, every process joins the
    checkpoint writes. Validation uses the first `eval_batches` batches (padded rows masked).
    `on_step(step, state)` is called after every step; Ctrl-C saves a checkpoint at the current
    step before re-raising (one process only: processes of a multi-process run may stop at
    different steps, so there the last periodic checkpoint stands)."""
    check_configs(data, cfg, tcfg)
    log = log or (lambda s: None)
    lead = jax.process_index() == 0
    B, T = tcfg.batch_size, data.train.seq_len
    if B % mesh.shape["data"]:
        raise ConfigError(f"batch size {B} is not divisible by the mesh data axis ({mesh.shape['data']})")
    mesh_cfg = sh.mesh_config(mesh)
    sg = make_sharded_train_step(mesh, cfg, tcfg, fsdp=fsdp)
    rows = sh.local_rows(mesh, B)
    state = init_state(cfg, tcfg)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = metrics = None
    start = 0
    if out is not None:
        ckpt, restored = open_checkpoints(out, cfg, tcfg, like=sg.abstract_state(state), resume=resume)
        if restored is not None:
            state = restored
            start = int(sh.to_host(state.step))
            log(f"resumed from step {start} of {tcfg.steps} onto mesh {mesh_cfg}")
        if lead:
            metrics = MetricsWriter(out / "metrics.jsonl")
            metrics.write(
                event="resume" if start else "start", step=start, mesh=str(mesh_cfg), processes=jax.process_count()
            )
    elif resume:
        raise ConfigError("resume needs an output folder with checkpoints")
    if start == 0:
        state = sg.put_state(state)

    eval_batches = data.val.eval_batches(B, tcfg.eval_batches) if data.val is not None else []
    eval_batches = [sg.batch(Batch(*(np.asarray(a)[rows] for a in b)), B) for b in eval_batches]

    def evaluate() -> float:
        sums = [sg.eval_sums(state.params, *b) for b in eval_batches]
        tot, cnt = (float(np.sum([sh.to_host(x)[i] for x in sums])) for i in (0, 1))
        if cnt == 0:
            raise DataError("validation batches contain no target positions")
        return tot / cnt

    bar = Progress(total=tcfg.steps, initial=start, desc=f"gpt train [{mesh_cfg}]", disable=not (progress and lead))
    t0 = time.perf_counter()
    history: list = []
    last_loss, val_loss, compile_seconds = float("nan"), None, 0.0
    sync = sh.await_each_step(mesh)
    try:
        for step in range(start + 1, tcfg.steps + 1):
            b = sg.batch(_local(data.train, step - 1, B, tcfg.seed, rows), B)
            state, loss = sg.step(state, *b)
            if step == start + 1 or sync:
                jax.block_until_ready(loss)
                compile_seconds = time.perf_counter() - t0
            if step % tcfg.log_every == 0 or step == tcfg.steps:
                last_loss = float(sh.to_host(loss))
                bar.set(loss=last_loss)
                if metrics is not None:
                    metrics.write(step=step, loss=last_loss, train_seconds=time.perf_counter() - t0)
            if eval_batches and ((tcfg.eval_every and step % tcfg.eval_every == 0) or step == tcfg.steps):
                val_loss = evaluate()
                bar.set(val=val_loss)
                if metrics is not None:
                    metrics.write(step=step, val_loss=val_loss)
                history.append(
                    {
                        "step": step,
                        "wall_seconds": time.perf_counter() - t0,
                        "train_loss": last_loss,
                        "val_loss": val_loss,
                    }
                )
            if ckpt is not None and tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step != tcfg.steps:
                save_checkpoint(ckpt, step, state, cfg, tcfg)
            bar.update()
            if on_step is not None:
                on_step(step, state)
    except BaseException as e:
        bar.close()
        if ckpt is not None:
            if isinstance(e, KeyboardInterrupt):
                done = int(sh.to_host(state.step))
                if done > start and jax.process_count() == 1:
                    save_checkpoint(ckpt, done, state, cfg, tcfg)
                    log(f"interrupted: checkpoint saved at step {done}")
                elif done > start:
                    log(
                        f"interrupted at step {done}: no checkpoint saved on Ctrl-C with "
                        f"{jax.process_count()} processes; the last periodic one stands"
                    )
            ckpt.close()
        raise
    finally:
        if metrics is not None:
            metrics.close()
    bar.close()
    seconds = time.perf_counter() - t0
    run_steps = tcfg.steps - start
    summary = {
        "steps": tcfg.steps,
        "start_step": start,
        "engine": tcfg.engine,
        "dtype": tcfg.dtype,
        "mesh": str(mesh_cfg),
        "fsdp": fsdp,
        "processes": jax.process_count(),
        "train_loss": last_loss,
        "val_loss": val_loss,
        "train_seconds": seconds,
        "compile_seconds": compile_seconds,
        "tokens_per_step": B * T,
        "tokens_per_s": (run_steps - 1) * B * T / max(seconds - compile_seconds, 1e-9)
        if run_steps > 1
        else float("nan"),
        "n_params": int(sum(np.prod(p.shape) for p in state.params.values())),
    }
    if ckpt is not None:
        if start < tcfg.steps:
            save_checkpoint(ckpt, tcfg.steps, state, cfg, tcfg)
        ckpt.close()
    params = sh.to_host(state.params)  # a collective with several processes: all take part
    if out is not None and lead:
        if export:
            export_model(out, params, cfg, data.tokenizer)
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
        f"trained {tcfg.steps} steps on mesh {mesh_cfg}: train loss {last_loss:.4f}"
        + (f", val loss {val_loss:.4f}" if val_loss is not None else "")
    )
    return TrainResult(state, history, summary)
