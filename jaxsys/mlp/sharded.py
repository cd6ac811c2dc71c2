"""The MLP's train step on a device mesh: data parallel over 'data', tensor parallel over 'model',
optional FSDP (see jaxsys.train.sharding). The step is `jaxsys.mlp.train._train_step` unchanged;
only its jit carries shardings, so the sharded and single-device runs compute the same thing.

    mesh = make_mesh(parse_mesh("data=2,model=2"))
    sm = make_sharded_train_step(mesh, step_cfg)
    state = sm.put_state(init_state(key, step_cfg))
    state, metrics = sm.step(state, *sm.batch(x_local, y_local, global_batch=64))

Tensor parallel pairs the layers Megatron-style (w_OxI): layer 0 split by output rows, layer 1 by
input columns (one all-reduce closes the pair), layer 2 by rows, ...; an unpaired last layer stays
replicated. Checkpoints hold the same TrainState as single-device runs, so either restores the other.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsys.errors import ConfigError
from jaxsys.mlp import model as mlp_model
from jaxsys.mlp.data import Dataset, load
from jaxsys.mlp.train import StepConfig, TrainConfig, TrainState, _batch_indices, _evaluate, _train_step, init_state
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
from jaxsys.train import sharding as sh


def tensor_parallel_rules(num_layers: int) -> tuple[sh.Rule, ...]:
    """Name rules for params/0/w ... (and the Adam moments mu/0/w ...): even layers split by
    output rows (with their bias), the following odd layer by input columns."""
    rules: list[sh.Rule] = []
    for layer in range(num_layers):
        if layer % 2 == 0 and layer + 1 < num_layers:
            rules += [(rf"(^|/){layer}/w$", P("model", None)), (rf"(^|/){layer}/b$", P("model"))]
        elif layer % 2 == 1:
            rules.append((rf"(^|/){layer}/w$", P(None, "model")))
    return tuple(rules)


class ShardedMLP(NamedTuple):
    mesh: Mesh
    state_shardings: Any  # a TrainState of NamedShardings
    batch_sharding: Any  # NamedSharding of x and y (rows over 'data')
    step: Callable  # (state, x_BxI, y_B) -> (state, metrics); state donated
    evaluate: Callable  # (params, x, y) -> metrics, replicated

    def put_state(self, state: TrainState) -> TrainState:
        return sh.put_tree(state, self.state_shardings)

    def abstract_state(self, state_like: TrainState) -> TrainState:
        """`like=` for Checkpointer.restore: restores straight onto this mesh."""
        return sh.abstract_tree(state_like, self.state_shardings)

    def batch(self, x_local, y_local, global_batch: int | None = None):
        b = sh.shard_batch({"x": np.asarray(x_local), "y": np.asarray(y_local)}, self.mesh, global_batch)
        return b["x"], b["y"]

    def replicate(self, *arrays):
        return tuple(sh.put_tree(np.asarray(a), sh.replicated(self.mesh)) for a in arrays)


def make_sharded_train_step(
    mesh: Mesh, cfg: StepConfig, *, fsdp: bool = False, fsdp_min_size: int = 2**16, dtype=np.float32
) -> ShardedMLP:
    """Shardings for the MLP train state on `mesh` and the jitted sharded step/eval."""
    if cfg.model.matmul != "xla" and mesh.size > 1:
        raise ConfigError(
            "the sharded MLP step needs matmul='xla' (XLA cannot partition the Pallas kernel across devices)"
        )
    like = jax.eval_shape(lambda: init_state(jax.random.PRNGKey(0), cfg, dtype))
    state_sh = sh.tree_shardings(
        like, mesh, rules=tensor_parallel_rules(cfg.model.num_layers), fsdp=fsdp, fsdp_min_size=fsdp_min_size
    )
    rep = sh.replicated(mesh)
    batch_sh = NamedSharding(mesh, P("data") if mesh.shape["data"] > 1 else P())
    step = sh.jit_sharded(
        functools.partial(_train_step, cfg=cfg), (state_sh, batch_sh, batch_sh), (state_sh, rep), donate_argnums=0
    )
    evaluate = sh.jit_sharded(functools.partial(_evaluate, cfg=cfg.model), (state_sh.params, rep, rep), rep)
    return ShardedMLP(mesh, state_sh, batch_sh, step, evaluate)


def train_sharded(
    cfg: TrainConfig,
    run_dir: str | Path,
    mesh: Mesh,
    *,
    data: Dataset | None = None,
    resume: bool = False,
    fsdp: bool = False,
    log=print,
    progress: bool = True,
) -> dict:
    """`jaxsys.mlp.train.train` on a mesh (one or several processes): same files, same minibatches
    (a function of (seed, step)); each process places only its rows of every batch. Process 0
    writes config/metrics/summary; every process takes part in the (orbax) checkpoints."""
    run_dir = Path(run_dir)
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
    config_record = {"train": dataclasses.asdict(cfg), "sizes": list(scfg.model.sizes), "data": data.name}
    sm = make_sharded_train_step(mesh, scfg, fsdp=fsdp)
    run_dir.mkdir(parents=True, exist_ok=True)
    if lead:
        atomic_write_json(
            run_dir / "config.json",
            {**config_record, "mesh": str(mesh_cfg), "fsdp": fsdp, "processes": jax.process_count()},
        )

    state = init_state(jax.random.PRNGKey(cfg.seed), scfg)
    ckpt = Checkpointer(run_dir / "ckpt")
    start = 0
    if resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(like=sm.abstract_state(state))
        saved = meta.get("config", {})
        if saved and saved.get("sizes") != config_record["sizes"]:
            raise ConfigError(
                f"cannot resume {run_dir}: checkpoint has sizes {saved.get('sizes')}, this run {config_record['sizes']}"
            )
        start = int(sh.to_host(state.step))
        log(f"resumed from step {start} in {ckpt.directory} onto mesh {mesh_cfg}")
    else:
        state = sm.put_state(state)

    rows = sh.local_rows(mesh, cfg.batch)
    x_test, y_test = sm.replicate(data.x_test, data.y_test)
    n = len(data.x_train)
    metrics_w = MetricsWriter(run_dir / "metrics.jsonl") if lead else None
    bar = Progress(total=cfg.steps, initial=start, desc=f"mlp {cfg.task} [{mesh_cfg}]", disable=not (progress and lead))
    t0 = time.perf_counter()
    last: dict = {}

    def host(m):
        return {k: float(v) for k, v in sh.to_host(m).items()}

    sync = sh.await_each_step(mesh)
    try:
        for step in range(start, cfg.steps):
            idx = _batch_indices(n, cfg.batch, cfg.seed, step)[rows]  # this process's rows only
            state, m = sm.step(state, *sm.batch(data.x_train[idx], data.y_train[idx], cfg.batch))
            if sync:
                jax.block_until_ready(m)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                last = host(m)
                bar.set(**last)
                if metrics_w:
                    metrics_w.write(step=done, split="train", **last)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                ev = host(sm.evaluate(state.params, x_test, y_test))
                bar.set(**{f"test_{k}": v for k, v in ev.items()})
                if metrics_w:
                    metrics_w.write(step=done, split="test", **ev)
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                ckpt.save(done, state, meta={"config": config_record, "mesh": str(mesh_cfg), **last})
            bar.update()
    finally:
        bar.close()
        if metrics_w:
            metrics_w.close()
        ckpt.close()

    x_train, y_train = sm.replicate(data.x_train, data.y_train)
    ev = host(sm.evaluate(state.params, x_test, y_test))
    tr = host(sm.evaluate(state.params, x_train, y_train))
    summary = {
        "data": data.name,
        "task": cfg.task,
        "sizes": list(scfg.model.sizes),
        "steps": int(sh.to_host(state.step)),
        "resumed_from": start,
        "mesh": str(mesh_cfg),
        "processes": jax.process_count(),
        "seconds": round(time.perf_counter() - t0, 2),
        **{f"train_{k}": v for k, v in tr.items()},
        **{f"test_{k}": v for k, v in ev.items()},
    }
    if cfg.task == "regress":
        summary["test_rmse"] = float(np.sqrt(2 * ev["loss"]) * data.y_std)
    if lead:
        atomic_write_json(run_dir / "summary.json", summary)
        log(json.dumps(summary))
    return summary
