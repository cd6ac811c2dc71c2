"""Child process for tests/mlp/test_mlp_sharded.py on simulated CPU devices; prints one RESULT line.

python tests/mlp/_sharded_worker.py RUN_ROOT     (both scenarios: one JAX start-up)
"""

import json
import sys

import jax
import numpy as np

from jaxsys.mlp import model as mlp_model
from jaxsys.mlp.adam import AdamConfig
from jaxsys.mlp.train import StepConfig, TrainConfig, init_state, make_sharded_train_step, train, train_step
from jaxsys.train import sharding as sh

B, SIZES = 8, (12, 16, 8, 4)
# `jaxsys mlp train` flags of TrainConfig(hidden=(16, 16), steps=6, batch=16, log_every=2, eval_every=3,
# checkpoint_every=3); the test's two-process run uses them too
CLI_ARGS = [
    "--hidden",
    "16,16",
    "--steps",
    "6",
    "--batch",
    "16",
    "--log-every",
    "2",
    "--eval-every",
    "3",
    "--checkpoint-every",
    "3",
    "--no-progress",
]


def one_device():
    return sh.make_mesh(None, devices=jax.devices()[:1])


def batch(step):
    rng = np.random.default_rng(7 + step)
    return rng.normal(size=(B, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], B).astype(np.int32)


def flat(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(sh.to_host(tree))]


def scenario_parity():
    cfg = StepConfig(mlp_model.MLPConfig(SIZES, "classify"), AdamConfig("hand", 1e-2), "hand")
    ref = init_state(jax.random.PRNGKey(3), cfg)
    ref_losses = []
    for s in range(2):
        ref, m = train_step(ref, *batch(s), cfg=cfg)
        ref_losses.append(float(m["loss"]))
    ref_flat = flat(ref)
    cases = []
    for shape, fsdp in [((4, 1), False), ((2, 2), False), ((2, 2), True), ((1, 1), False)]:
        n = shape[0] * shape[1]
        mesh = sh.make_mesh(sh.MeshConfig(*shape), devices=jax.devices()[:n])
        sm = make_sharded_train_step(mesh, cfg, fsdp=fsdp, fsdp_min_size=64)
        state = sm.put_state(init_state(jax.random.PRNGKey(3), cfg))
        abstract = (sm.abstract_state(state), *sm.batch(*batch(0)))
        losses = []
        for s in range(2):
            state, m = sm.step(state, *sm.batch(*batch(s)))
            losses.append(float(sh.to_host(m["loss"])))
        specs = dict(sh.compiled_input_specs(sm.step, *abstract))  # after the call: a cache hit
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(flat(state), ref_flat))
        cases.append(
            {
                "mesh": list(shape),
                "fsdp": fsdp,
                "losses": losses,
                "param_max_diff": diff,
                "specs": {k: str(v) for k, v in specs.items()},
                "n_devices": len(state.params[0]["w"].sharding.device_set),
            }
        )
    return {"ref_losses": ref_losses, "cases": cases, "device_count": jax.device_count()}


def scenario_train(root):
    from jaxsys.mlp.data import load

    data = load("classify")
    cfg = TrainConfig(hidden=(16, 16), steps=6, batch=16, log_every=2, eval_every=3, checkpoint_every=3)
    # mesh=None: every device on 'data' (4 here); a one-device mesh is the single-device run
    single = train(cfg, f"{root}/single", data=data, mesh=one_device(), log=lambda m: None, progress=False)
    # the same run through the CLI on a (2, 2) mesh of the 4 devices
    from jaxsys.cli import main

    rc = main(["mlp", "train", *CLI_ARGS, "--mesh", "data=2,model=2", "--run-dir", f"{root}/mesh"])
    assert rc == 0, rc
    multi = json.loads(open(f"{root}/mesh/summary.json").read())
    # resume the 4-device run's step-3 checkpoint on a 2-device mesh and finish: same end point
    import shutil

    shutil.copytree(f"{root}/mesh/ckpt/3", f"{root}/resume/ckpt/3")
    mesh2 = sh.make_mesh("data=2", devices=jax.devices()[:2])
    resumed = train(cfg, f"{root}/resume", data=data, mesh=mesh2, log=lambda m: None, progress=False)
    return {"single": single, "mesh": multi, "resumed": resumed}


if __name__ == "__main__":
    res = {"parity": scenario_parity(), "train": scenario_train(sys.argv[1])}
    print("RESULT " + json.dumps(res))
