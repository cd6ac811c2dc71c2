"""The Mamba-GINR train step on a device mesh (jaxsys.train.sharding): images, coordinates and
targets split over 'data'; parameters replicated, or with `fsdp` every large matrix (and its AdamW
moments) split over 'data'. The step is `jaxsys.ginr.train._train_step` unchanged.

    mesh = make_mesh(parse_mesh("data=4"))
    sg = make_sharded_train_step(mesh, mc, tc)
    state = sg.put_state(init_state(key, mc, tc))
    state, metrics = sg.step(state, sg.batch(local_batch, global_batch=tc.batch_size))

`train_sharded` is the loop of `jaxsys ginr train --mesh ...`: the batches of
`jaxsys.ginr.data.Batches` (pure in (seed, step)), each process placing only its rows, metrics,
checkpoints (same state pytree as `train.train`) and the final full-grid PSNR.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsys.errors import ConfigError, DataError
from jaxsys.ginr import data as gdata
from jaxsys.ginr import model as gm
from jaxsys.ginr.train import (
    StepClock,
    TrainConfig,
    _reconstruct,
    _train_step,
    check_batch,
    check_resume_config,
    init_state,
    psnr,
    save_on_interrupt,
    save_run_plots,
    step_config,
    timed_step,
)
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_json
from jaxsys.train import sharding as sh


class ShardedGinr(NamedTuple):
    mesh: Mesh
    state_shardings: Any  # the state dict of NamedShardings
    step: Callable  # (state, batch) -> (state, {"loss", "psnr"}); state donated
    reconstruct: Callable  # (params, images) -> full-grid reconstruction, rows over 'data'

    def put_state(self, state: dict) -> dict:
        return sh.put_tree(state, self.state_shardings)

    def abstract_state(self, state_like: dict) -> dict:
        """`like=` for Checkpointer.restore: restores straight onto this mesh."""
        return sh.abstract_tree(state_like, self.state_shardings)

    def batch(self, local: dict, global_batch: int | None = None) -> dict:
        return sh.shard_batch({k: np.asarray(v) for k, v in local.items()}, self.mesh, global_batch)


@functools.lru_cache(maxsize=8)  # one compile per (mesh, configs): the loop reuses a warmed step
def make_sharded_train_step(
    mesh: Mesh, mc: gm.GinrConfig, tc: TrainConfig, *, fsdp: bool = False, fsdp_min_size: int = 2**16
) -> ShardedGinr:
    mc.validate()
    tc.validate()
    if tc.batch_size % mesh.shape["data"]:
        raise ConfigError(f"batch_size {tc.batch_size} is not divisible by the mesh data axis ({mesh.shape['data']})")
    like = jax.eval_shape(lambda: init_state(jax.random.PRNGKey(0), mc, tc))
    state_sh = sh.tree_shardings(like, mesh, fsdp=fsdp, fsdp_min_size=fsdp_min_size)
    rep = sh.replicated(mesh)
    rows = NamedSharding(mesh, P("data") if mesh.shape["data"] > 1 else P())
    step = sh.jit_sharded(
        functools.partial(_train_step, mc=mc, tc=tc), (state_sh, rows), (state_sh, rep), donate_argnums=0
    )
    rec = sh.jit_sharded(functools.partial(_reconstruct, mc=mc, scale=1), (state_sh["params"], rows), rows)
    return ShardedGinr(mesh, state_sh, step, rec)


def evaluate_sharded(sg: ShardedGinr, params: dict, images_u8: np.ndarray, batch_size: int) -> dict:
    """Full-grid PSNR/MSE over `images_u8` (every process passes all images; it places its rows)."""
    rows = sh.local_rows(sg.mesh, batch_size)
    ps, ms = [], []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i : i + batch_size]
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.repeat(x[-1:], batch_size - n, 0)])
        xf = x.astype(np.float32) / 255.0
        rec = sh.to_host(sg.reconstruct(params, sh.shard_batch(xf[rows], sg.mesh, batch_size)))
        mse = np.mean((rec - xf) ** 2, axis=(1, 2, 3))[:n]
        ms.append(mse)
        ps.append(np.asarray(psnr(mse)))
    ms, ps = np.concatenate(ms), np.concatenate(ps)
    return {"psnr": float(ps.mean()), "mse": float(ms.mean()), "images": int(len(ps))}


def train_sharded(
    mc: gm.GinrConfig,
    tc: TrainConfig,
    train_images: np.ndarray,
    test_images: np.ndarray,
    run_dir: str | Path,
    mesh: Mesh,
    *,
    fsdp: bool = False,
    log: Callable = print,
    progress: bool = True,
) -> dict:
    """`jaxsys.ginr.train.train` on a mesh (resumes from run_dir/ckpt if present, onto this mesh);
    process 0 writes config/metrics/summary, every process joins the checkpoint writes."""
    mc.validate()
    tc.validate()
    run_dir = Path(run_dir)
    lead = jax.process_index() == 0
    for name, x in (("train", train_images), ("test", test_images)):
        if x.ndim != 4 or x.shape[1:] != (mc.image_size, mc.image_size, mc.channels):
            raise DataError(
                f"{name} images must be [N, {mc.image_size}, {mc.image_size}, "
                f"{mc.channels}] for this config, got {x.shape}"
            )
    sg = make_sharded_train_step(mesh, mc, step_config(tc), fsdp=fsdp)  # shared by runs differing in logging
    mesh_cfg = sh.mesh_config(mesh)
    rows = sh.local_rows(mesh, tc.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = init_state(jax.random.PRNGKey(tc.seed), mc, tc)
    ckpt = Checkpointer(run_dir / "ckpt", max_to_keep=2)
    train_seconds, start = 0.0, 0
    if ckpt.latest_step() is not None:
        check_resume_config(run_dir, mc, ckpt)
        state, meta = ckpt.restore(like=sg.abstract_state(state))
        start, train_seconds = int(sh.to_host(state["step"])), float(meta.get("train_seconds", 0.0))
        log(f"resumed from step {start} onto mesh {mesh_cfg}")
    else:
        state = sg.put_state(state)
    if lead:
        atomic_write_json(
            run_dir / "config.json",
            {
                "model": dataclasses.asdict(mc),
                "train": dataclasses.asdict(tc),
                "mesh": str(mesh_cfg),
                "fsdp": fsdp,
                "processes": jax.process_count(),
            },
        )
    eval_bs = min(100, len(test_images))
    eval_bs -= eval_bs % mesh.shape["data"]
    if eval_bs < 1:
        raise ConfigError(f"need at least {mesh.shape['data']} test images for the mesh data axis")
    metrics = MetricsWriter(run_dir / "metrics.jsonl") if lead else None
    batches = gdata.Batches(train_images, tc.batch_size, tc.num_sample_coords, tc.seed, start, prefetch=1)
    bar = Progress(total=tc.steps, desc=f"ginr [{mesh_cfg}]", initial=start, disable=not (progress and lead))
    step, clock = start, StepClock(train_seconds, state)
    try:
        last = min(tc.stop_at or tc.steps, tc.steps)
        while step < last and not (tc.max_seconds and train_seconds >= tc.max_seconds):
            full = batches.batch(step)  # pure in (seed, step): every process agrees on it
            if clock.compile_seconds is None:
                check_batch(full, mc)
            state, rec = timed_step(
                lambda: sg.step(state, sg.batch({k: v[rows] for k, v in full.items()}, tc.batch_size)),
                clock,
                step,
                tc.batch_size,
                fetch=sh.to_host,
            )
            step, loss, train_seconds = rec["step"], rec["loss"], clock.train_seconds
            if tc.eval_every and step % tc.eval_every == 0:
                ev = evaluate_sharded(sg, state["params"], test_images[: tc.eval_images], eval_bs)
                rec.update({f"test_{k}": v for k, v in ev.items()})
            bar.set(loss=loss, psnr=rec["train_psnr"])
            bar.update()
            if metrics:
                metrics.write(**rec)
            if tc.ckpt_every and step % tc.ckpt_every == 0:
                ckpt.save(step, state, meta={"train_seconds": train_seconds, "mesh": str(mesh_cfg)})
        bar.close()
        if ckpt.latest_step() != step:
            ckpt.save(step, state, meta={"train_seconds": train_seconds, "mesh": str(mesh_cfg)})
        final_imgs = test_images if tc.final_eval_images == 0 else test_images[: tc.final_eval_images]
        final = evaluate_sharded(sg, state["params"], final_imgs, eval_bs)
        summary = {
            "steps": step,
            "train_seconds": round(train_seconds, 1),
            "compile_seconds": round(clock.compile_seconds or 0.0, 1),
            "mesh": str(mesh_cfg),
            "processes": jax.process_count(),
            "final_test_psnr": round(final["psnr"], 2),
            "final_test_psnr_exact": final["psnr"],
            "final_test_images": final["images"],
            "num_params": gm.num_params(state["params"]),
        }
        if metrics:
            metrics.write(
                step=step, train_seconds=train_seconds, final=True, **{f"test_{k}": v for k, v in final.items()}
            )
        params = sh.to_host(state["params"])  # a collective with several processes: all take part
        if lead:
            save_run_plots(params, test_images, mc, run_dir)
            atomic_write_json(run_dir / "summary.json", summary)
        return summary
    except KeyboardInterrupt:
        bar.close()
        if jax.process_count() == 1:  # with several processes a save is collective: the others may be gone
            save_on_interrupt(
                ckpt, clock.newest_state, start, {"train_seconds": clock.train_seconds, "mesh": str(mesh_cfg)}, log
            )
        else:
            log(
                f"interrupted at step {step}: no checkpoint on Ctrl-C with several processes; the last "
                f"periodic one stands"
            )
        raise
    finally:
        batches.close()
        if metrics:
            metrics.close()
        ckpt.close()
