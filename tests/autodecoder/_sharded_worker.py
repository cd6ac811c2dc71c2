"""Child process for tests/autodecoder/test_sharded.py on 4 simulated CPU devices; one RESULT line."""

import dataclasses
import json

import jax
import numpy as np

from jaxsys.autodecoder.model import ModelConfig
from jaxsys.autodecoder.sharded import make_sharded_burst, put_seed_state
from jaxsys.autodecoder.train import TrainConfig, data_keys, init_states, train_burst
from jaxsys.train import sharding as sh

CFG = TrainConfig(
    model=ModelConfig(latent_dim=4, num_freqs=2, hidden=(16, 16)),
    batch_size=32,
    steps=8,
    steps_per_call=4,
    eval_res=24,
    num_seeds=4,
)


def main():
    n = CFG.steps_per_call
    ref, ref_loss, _ = train_burst(init_states(CFG), data_keys(CFG), cfg=CFG, n_steps=n)
    ref_flat = [np.asarray(x) for x in jax.tree_util.tree_leaves(ref)]
    out = {"device_count": jax.device_count(), "cases": []}
    for spec in ("data=4",):
        mesh = sh.make_mesh(spec)
        burst = make_sharded_burst(mesh, CFG, n)
        state, keys = put_seed_state(init_states(CFG), mesh), put_seed_state(data_keys(CFG), mesh)
        abstract = (
            jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state),
            keys,
        )
        state, loss, _ = burst(state, keys)
        specs = dict(sh.compiled_input_specs(burst, *abstract))  # after the call: a cache hit
        leaves = jax.tree_util.tree_leaves(state)
        out["cases"].append(
            {
                "mesh": spec,
                "specs": {k: str(v) for k, v in specs.items()},
                "loss_max_diff": float(np.max(np.abs(np.asarray(loss) - np.asarray(ref_loss)))),
                "param_max_diff": max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(leaves, ref_flat)),
                "seeds_per_device": sorted({s.data.shape[0] for x in leaves if x.ndim for s in x.addressable_shards}),
            }
        )
    # `jaxsys autodecoder train --mesh data=4 --num-seeds 4`: its first burst vs the one-device burst
    import sys

    from jaxsys.cli import main
    from jaxsys.train import read_metrics

    root = sys.argv[1]
    rc = main(
        [
            "autodecoder",
            "train",
            "--mesh",
            "data=4",
            "--num-seeds",
            "4",
            "--steps",
            "8",
            "--steps-per-call",
            "4",
            "--batch",
            "32",
            "--latent-dim",
            "4",
            "--freqs",
            "2",
            "--hidden",
            "16,16",
            "--eval-res",
            "24",
            "--infer-shape",
            "",
            "--out",
            f"{root}/mesh",
            "--quiet",
        ]
    )  # inference: tested apart
    out["cli_rc"] = rc
    out["cli_losses"] = [r["loss_per_seed"] for r in read_metrics(f"{root}/mesh/metrics.jsonl")]
    out["single_first_burst"] = [float(v) for v in np.asarray(ref_loss).mean(axis=1)]
    try:
        make_sharded_burst(sh.make_mesh("data=4"), dataclasses.replace(CFG, num_seeds=6), n)
        out["bad_seeds_error"] = None
    except Exception as e:  # noqa: BLE001
        out["bad_seeds_error"] = f"{type(e).__name__}: {e}"
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()))
