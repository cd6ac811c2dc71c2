"""Step time vs device count for the sharded MLP and GPT train steps (jaxsys.train.sharding).

On this CPU the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=8 splits
the same cores), so the times show partitioning overhead, not speed-up; what the run does show is
that every mesh computes the single-device step (loss and parameter differences are recorded).
On a multi-GPU host the same script (with --devices = the GPU count) measures real scaling.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_scaling.py            # CPU, 8 simulated
    python experiments/bench_scaling.py --no-simulate --out runs/bench/scaling_gpu.json

Writes runs/bench/scaling.json (or --out) and prints a table with ratios to the 1-device mesh.
All configurations are timed interleaved (round-robin over repeats) so machine noise hits each alike.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> dict:
    import jax
    import numpy as np

    from jaxsys.gpt import train as gpt_train
    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.train import TrainConfig as GPTTrain
    from jaxsys.gpt.train import init_state as gpt_init
    from jaxsys.gpt.train import train_step as gpt_step
    from jaxsys.mlp import model as mlp_model
    from jaxsys.mlp import train as mlp_train
    from jaxsys.mlp.adam import AdamConfig
    from jaxsys.mlp.train import StepConfig
    from jaxsys.mlp.train import init_state as mlp_init
    from jaxsys.mlp.train import train_step as mlp_step
    from jaxsys.train import sharding as sh

    n_dev = jax.device_count()
    counts = [n for n in (1, 2, 4, 8, 16) if n <= n_dev]
    meshes = [(n, 1, False) for n in counts]
    if n_dev >= 4:
        meshes += [(2, 2, False), (2, 2, True)]
    if n_dev >= 8:
        meshes += [(4, 2, False), (8, 1, True)]

    # ----- systems: (name, reference single-device step, sharded factory, init, batches)
    mcfg = StepConfig(
        mlp_model.MLPConfig((64, args.mlp_hidden, args.mlp_hidden, 10), "classify"), AdamConfig("optax", 1e-3), "hand"
    )
    rng = np.random.default_rng(0)
    mlp_batches = [
        (rng.normal(size=(args.batch, 64)).astype(np.float32), rng.integers(0, 10, args.batch).astype(np.int32))
        for _ in range(4)
    ]
    gcfg = GPTConfig(vocab_size=32, n_embd=args.gpt_embd, n_head=4, n_layer=2, block_size=args.seq)
    gstep = GPTTrain(steps=1000, batch_size=args.batch, lr=1e-3).step_config(gcfg)
    gpt_batches = [
        (
            rng.integers(0, 32, (args.batch, args.seq)).astype(np.int32),
            rng.integers(0, 32, (args.batch, args.seq)).astype(np.int32),
            np.ones((args.batch, args.seq), np.float32),
        )
        for _ in range(4)
    ]

    systems = {
        "mlp": dict(
            init=lambda: mlp_init(jax.random.PRNGKey(0), mcfg),
            ref=lambda s, b: mlp_step(s, *b, cfg=mcfg),
            make=lambda mesh, fsdp: mlp_train.make_sharded_train_step(mesh, mcfg, fsdp=fsdp, fsdp_min_size=4096),
            place=lambda sm, b: sm.batch(*b),
            batches=mlp_batches,
            loss=lambda out: out["loss"],
        ),
        "gpt": dict(
            init=lambda: gpt_init(jax.random.key(0), gstep),
            ref=lambda s, b: gpt_step(s, *b, cfg=gstep),
            make=lambda mesh, fsdp: gpt_train.make_sharded_train_step(mesh, gstep, fsdp=fsdp, fsdp_min_size=4096),
            place=lambda sg, b: tuple(sg.batch(b)),
            batches=gpt_batches,
            loss=lambda out: out,
        ),
    }

    def flat(tree):
        return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(sh.to_host(tree))]

    runs = {}
    for name, s in systems.items():
        ref_state, ref_losses = s["init"](), []
        for b in s["batches"][: args.check_steps]:
            ref_state, out = s["ref"](ref_state, b)
            ref_losses.append(float(s["loss"](out)))
        ref_flat = flat(ref_state)
        for d, m, fsdp in meshes:
            mesh = sh.make_mesh(sh.MeshConfig(d, m), devices=jax.devices()[: d * m])
            sm = s["make"](mesh, fsdp)
            placed = [s["place"](sm, b) for b in s["batches"]]
            state, losses = sm.put_state(s["init"]()), []
            t0 = time.perf_counter()
            for b in placed[: args.check_steps]:
                state, out = sm.step(state, *b)
                losses.append(float(sh.to_host(s["loss"](out))))
            compile_s = time.perf_counter() - t0
            diff = max(float(np.max(np.abs(a - r))) for a, r in zip(flat(state), ref_flat))
            key = f"{name} data={d},model={m}" + (" fsdp" if fsdp else "")
            runs[key] = dict(
                system=name,
                data=d,
                model=m,
                fsdp=fsdp,
                devices=d * m,
                sm=sm,
                state=state,
                placed=placed,
                loss=s["loss"],
                times=[],
                first_steps_s=compile_s,
                loss_max_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)),
                param_max_diff=diff,
            )

    for _ in range(args.repeats):  # interleaved: one timed block of every configuration per round
        for r in runs.values():
            jax.block_until_ready(r["state"])
            t0 = time.perf_counter()
            for i in range(args.steps):
                r["state"], out = r["sm"].step(r["state"], *r["placed"][i % len(r["placed"])])
            jax.block_until_ready(r["state"])
            r["times"].append((time.perf_counter() - t0) / args.steps)

    results = []
    for key, r in runs.items():
        med = float(np.median(r["times"]))
        base = float(np.median(runs[f"{r['system']} data=1,model=1"]["times"]))
        results.append(
            {
                "config": key,
                "system": r["system"],
                "data": r["data"],
                "model": r["model"],
                "fsdp": r["fsdp"],
                "devices": r["devices"],
                "step_ms_median": 1e3 * med,
                "step_ms_all": [1e3 * t for t in r["times"]],
                "ratio_vs_1_device": med / base,
                "first_steps_s_incl_compile": r["first_steps_s"],
                "loss_max_abs_diff_vs_single": r["loss_max_diff"],
                "param_max_abs_diff_vs_single": r["param_max_diff"],
            }
        )
    return {
        "device_count": n_dev,
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "simulated": "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""),
        "config": {
            "batch": args.batch,
            "mlp_sizes": [64, args.mlp_hidden, args.mlp_hidden, 10],
            "gpt": {"n_embd": args.gpt_embd, "n_layer": 2, "n_head": 4, "seq": args.seq, "vocab": 32},
            "timed_steps_per_block": args.steps,
            "repeats": args.repeats,
            "check_steps": args.check_steps,
        },
        "results": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices (child process)")
    ap.add_argument("--no-simulate", action="store_true", help="use the real devices (GPU host)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--mlp-hidden", type=int, default=256)
    ap.add_argument("--gpt-embd", type=int, default=64)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per block")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--check-steps", type=int, default=2, help="steps compared with the single-device step")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "scaling.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.child:
        env = dict(os.environ)
        if not args.no_simulate:
            from jaxsys.train.distributed import cpu_devices_env

            env = cpu_devices_env(args.devices)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, __file__, "--child"] + sys.argv[1:]
        return subprocess.call(cmd, env=env)
    res = child(args)
    res.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        command="python experiments/bench_scaling.py " + " ".join(a for a in sys.argv[1:] if a != "--child"),
    )
    from jaxsys.train.io import atomic_write_json

    atomic_write_json(args.out, res)
    print(f"{'config':34s} {'devices':>7s} {'step ms':>9s} {'x 1-dev':>8s} {'|dloss|':>9s} {'|dparam|':>9s}")
    for r in res["results"]:
        print(
            f"{r['config']:34s} {r['devices']:7d} {r['step_ms_median']:9.2f} {r['ratio_vs_1_device']:8.2f} "
            f"{r['loss_max_abs_diff_vs_single']:9.1e} {r['param_max_abs_diff_vs_single']:9.1e}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
