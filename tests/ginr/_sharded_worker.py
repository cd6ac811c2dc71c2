"""Child process for tests/ginr/test_ginr_sharded.py on 4 simulated CPU devices; one RESULT line.

python tests/ginr/_sharded_worker.py RUN_ROOT
"""

import json
import sys

import jax
import numpy as np

from jaxsys.ginr import data as gdata
from jaxsys.ginr.model import GinrConfig
from jaxsys.ginr.train import TrainConfig, init_state, train, train_step
from jaxsys.train import sharding as sh

MC = GinrConfig(
    image_size=8,
    patch_size=4,
    dim=16,
    num_lp=2,
    depth=1,
    hidden=8,
    ff_mult=2,
    hypo_blocks=1,
    num_freqs=2,
    d_state=4,
    expand=1,
    scan_chunk=0,
)  # plain sequential scan: the cheapest step to compile (sharding is under test)
TC = TrainConfig(
    batch_size=8, num_sample_coords=16, steps=2, lr=1e-3, warmup_steps=0, eval_every=0, checkpoint_every=0, prefetch=1
)
IMAGES = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3)).astype(np.uint8)


def flat(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(sh.to_host(tree))]


def main(root):
    src = gdata.Batches(IMAGES, TC.batch_size, TC.num_sample_coords, TC.seed, 0, 1, TC.coord_jitter)
    batches = [src.batch(s) for s in range(2)]
    src.close()
    tcs = TC.step_config()
    init0 = jax.device_get(init_state(jax.random.key(0), MC, TC))  # host copy: initialise once
    ref = jax.tree_util.tree_map(jax.numpy.asarray, init0)
    ref_losses = []
    for b in batches:  # one device, unplaced inputs
        ref, m = train_step(ref, b, MC, tcs)
        ref_losses.append(float(m["loss"]))
    ref_flat = flat(ref)
    cases = []
    for spec, fsdp in (("data=4", False),):
        mesh = sh.make_mesh(spec)
        state = sh.put_tree(init0, sh.tree_shardings(init0, mesh, fsdp=fsdp))
        placed = [sh.shard_batch(b, mesh) for b in batches]
        compiled = train_step.lower(state, placed[0], mc=MC, tc=tcs).compile()
        specs = dict(sh.compiled_input_specs(compiled, state, placed[0]))
        losses = []
        for b in placed:  # the same module-level step: placed inputs keep their shardings
            state, m = train_step(state, b, MC, tcs)
            losses.append(float(sh.to_host(m["loss"])))
        cases.append(
            {
                "mesh": spec,
                "fsdp": fsdp,
                "losses": losses,
                "param_max_diff": max(float(np.max(np.abs(a - r))) for a, r in zip(flat(state), ref_flat)),
                "batch_specs": {k: str(v) for k, v in specs.items() if k.startswith("1/")},
                "n_sharded_state_leaves": sum(v != sh.P() for k, v in specs.items() if k.startswith("0/")),
            }
        )
    # the loop of `jaxsys ginr train --mesh`: same batches, same losses, resumable state
    multi = train(
        MC, TC, IMAGES, IMAGES[16:], f"{root}/mesh", mesh=sh.make_mesh("data=4"), log=lambda s: None, progress=False
    )
    from jaxsys.train import read_metrics

    loop_losses = [r["loss"] for r in read_metrics(f"{root}/mesh/metrics.jsonl") if "loss" in r]
    return {
        "device_count": jax.device_count(),
        "ref_losses": ref_losses,
        "cases": cases,
        "loop_losses": loop_losses,
        "loop_summary": multi,
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
