"""Child process for tests/gpt/test_gpt_sharded.py on 4 simulated CPU devices; prints one RESULT line.

python tests/gpt/_sharded_worker.py RUN_ROOT
"""

import json
import sys

import jax
import numpy as np

from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.train import TrainConfig, init_state, make_sharded_train_step, train, train_step
from jaxsys.train import sharding as sh

CFG = GPTConfig(vocab_size=11, n_embd=16, n_head=4, n_layer=2, block_size=8)
TCFG = TrainConfig(steps=10, batch_size=8, lr=0.01)
STEP = TCFG.step_config(CFG)
B, T = 8, 8


def batch(step):
    rng = np.random.default_rng(11 + step)
    tokens = rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)
    targets = rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)
    mask = (rng.random((B, T)) < 0.8).astype(np.float32)
    return tokens, targets, mask


def flat(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(sh.to_host(tree))]


def scenario_parity():
    ref = init_state(jax.random.key(0), STEP)
    ref_losses = []
    for s in range(2):
        ref, loss = train_step(ref, *batch(s), cfg=STEP)
        ref_losses.append(float(loss))
    ref_flat = flat(ref)
    cases = []
    for shape, fsdp in [((4, 1), False), ((2, 2), True), ((1, 1), False)]:
        n = shape[0] * shape[1]
        mesh = sh.make_mesh(sh.MeshConfig(*shape), devices=jax.devices()[:n])
        sg = make_sharded_train_step(mesh, STEP, fsdp=fsdp, fsdp_min_size=256)
        state = sg.put_state(init_state(jax.random.key(0), STEP))
        abstract = (sg.abstract_state(state), *sg.batch(batch(0)))
        losses = []
        for s in range(2):
            state, loss = sg.step(state, *sg.batch(batch(s)))
            losses.append(float(sh.to_host(loss)))
        specs = dict(sh.compiled_input_specs(sg.step, *abstract))  # after the call: a cache hit
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(flat(state), ref_flat))
        cases.append(
            {
                "mesh": list(shape),
                "fsdp": fsdp,
                "losses": losses,
                "param_max_diff": diff,
                "specs": {k: str(v) for k, v in specs.items()},
            }
        )
    return {"ref_losses": ref_losses, "cases": cases, "device_count": jax.device_count()}


def scenario_train(root):
    from jaxsys.gpt.data import from_text

    text = "\n".join(["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal", "ida", "jo"] * 3)
    data = from_text(text, "docs", 8, seed=0)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, n_embd=16, n_head=4, n_layer=1, block_size=8)
    tcfg = TrainConfig(steps=4, batch_size=8, eval_every=2, eval_batches=2, checkpoint_every=2, log_every=1)
    one_device = sh.make_mesh(None, devices=jax.devices()[:1])  # mesh=None would put all 4 on 'data'
    single = train(data, cfg, tcfg, f"{root}/single", mesh=one_device, log=None, progress=False).summary
    # the same run through `jaxsys gpt train --mesh data=2,model=2` on the 4 devices
    from pathlib import Path

    from jaxsys.cli import main

    Path(f"{root}/names.txt").write_text(text + "\n")
    rc = main(
        [
            "gpt",
            "train",
            "--data",
            f"{root}/names.txt",
            "--mode",
            "docs",
            "--block-size",
            "8",
            "--n-embd",
            "16",
            "--n-head",
            "4",
            "--n-layer",
            "1",
            "--batch",
            "8",
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--eval-batches",
            "2",
            "--checkpoint-every",
            "2",
            "--log-every",
            "1",
            "--no-progress",
            "--mesh",
            "data=2,model=2",
            "--run-dir",
            f"{root}/mesh",
        ]
    )
    assert rc == 0, rc
    multi = json.loads(Path(f"{root}/mesh/train_summary.json").read_text())
    # the 4-device run's step-2 checkpoint, resumed on 2 devices, ends where the others do
    import shutil

    shutil.copytree(f"{root}/mesh/ckpt/2", f"{root}/resume/ckpt/2")
    mesh2 = sh.make_mesh("model=2", devices=jax.devices()[:2])
    resumed = train(data, cfg, tcfg, f"{root}/resume", mesh=mesh2, log=None, progress=False).summary
    keep = ("train_loss", "val_loss", "start_step", "mesh")
    return {k: {f: v.get(f) for f in keep} for k, v in (("single", single), ("mesh", multi), ("resumed", resumed))}


if __name__ == "__main__":
    print("RESULT " + json.dumps({"parity": scenario_parity(), "train": scenario_train(sys.argv[1])}))
