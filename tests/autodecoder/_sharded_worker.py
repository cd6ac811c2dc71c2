"""Child process for tests/autodecoder/test_sharded.py on 4 simulated CPU devices; one RESULT line."""

import dataclasses
import json
import sys

import jax
import numpy as np

from jaxsys.autodecoder import train as T
from jaxsys.autodecoder.model import ModelConfig
from jaxsys.train import sharding as sh

CFG = T.TrainConfig(
    model=ModelConfig(latent_dim=4, num_freqs=2, hidden=(16, 16)),
    batch_size=32,
    steps=8,
    steps_per_call=4,
    eval_res=24,
    num_seeds=4,
)


def _host(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def main():
    n, key, scfg = CFG.steps_per_call, jax.random.key(CFG.seed), CFG.step_config()
    one = sh.make_mesh(None, devices=jax.devices()[:1])
    ref, ref_loss, _ = T.train_step(
        T.put_seed_state(T.init_state(key, CFG), one), T.put_seed_state(T.data_keys(key, CFG), one), cfg=scfg, n_steps=n
    )
    ref_flat = _host(ref)
    out = {"device_count": jax.device_count(), "cases": []}
    for spec in ("data=4",):
        mesh = sh.make_mesh(spec)
        state = T.put_seed_state(T.init_state(key, CFG), mesh)
        keys = T.put_seed_state(T.data_keys(key, CFG), mesh)
        abstract = (
            jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state),
            keys,
        )
        compiled = T.train_step.lower(*abstract, cfg=scfg, n_steps=n).compile()
        specs = dict(sh.compiled_input_specs(compiled, *abstract))
        state, loss, _ = T.train_step(state, keys, cfg=scfg, n_steps=n)
        leaves = jax.tree_util.tree_leaves(state)
        out["cases"].append(
            {
                "mesh": spec,
                "specs": {k: str(v) for k, v in specs.items()},
                "loss_max_diff": float(np.max(np.abs(np.asarray(loss) - np.asarray(ref_loss)))),
                "param_max_diff": max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(leaves, ref_flat)),
                "seeds_per_device": sorted({s.data.shape[0] for x in leaves if x.ndim for s in x.addressable_shards}),
                "loss_seeds_per_device": sorted({s.data.shape[0] for s in loss.addressable_shards}),
            }
        )
    out["default_mesh_data"] = {
        s: int(T.seed_mesh(dataclasses.replace(CFG, num_seeds=s)).shape["data"]) for s in (1, 2, 4, 6, 8)
    }

    # `jaxsys autodecoder train --num-seeds 4` (with and without --mesh data=4): its first call vs
    # the one-device vmapped step
    from jaxsys.cli import main as cli_main
    from jaxsys.train import read_metrics

    root = sys.argv[1]
    tiny = ["--steps", "8", "--steps-per-call", "4", "--batch", "32", "--latent-dim", "4", "--freqs", "2"]
    tiny += ["--hidden", "16,16", "--eval-res", "24", "--infer-shape", "", "--no-progress"]  # inference: tested apart
    for name, extra in (("mesh", ["--mesh", "data=4"]), ("default", [])):
        rc = cli_main(["autodecoder", "train", "--num-seeds", "4", *tiny, *extra, "--run-dir", f"{root}/{name}"])
        out[f"cli_rc_{name}"] = rc
        out[f"cli_losses_{name}"] = [r["loss_per_seed"] for r in read_metrics(f"{root}/{name}/metrics.jsonl")]
    # one seed, no --mesh, 4 devices visible: trains on one device
    out["cli_rc_one_seed"] = cli_main(["autodecoder", "train", *tiny, "--run-dir", f"{root}/one"])
    out["single_first_burst"] = [float(v) for v in np.asarray(ref_loss).mean(axis=1)]
    for name, cfg, mesh in (
        ("bad_seeds_error", dataclasses.replace(CFG, num_seeds=6), sh.make_mesh("data=4")),
        ("one_seed_error", dataclasses.replace(CFG, num_seeds=1), sh.make_mesh("data=4")),
    ):
        try:
            T.train(cfg, f"{root}/{name}", mesh=mesh, progress=False, render=False)
            out[name] = None
        except Exception as e:  # noqa: BLE001
            out[name] = f"{type(e).__name__}: {e}"
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()))
