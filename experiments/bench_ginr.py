"""Mamba-GINR training throughput, JAX (jaxsys.ginr) vs the PyTorch port (experiments/torch_ginr.py),
side by side in one run, plus the memory of the selective-scan variants.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_ginr.py            # fast and balanced
    python experiments/bench_ginr.py --configs fast --rounds 2                # quicker

Each round runs every variant for --steps train steps (batch 32, 512 random pixels per image),
interleaved so machine load hits all variants alike; reports medians of per-step images/s and the
ratio to the faster PyTorch variant (1 or 2 intra-op threads, set per step). Memory: XLA's compiled temp-buffer size for the gradient of one selective scan at
the `fast` shapes, and for the whole train step, per scan mode. Writes experiments/results/ginr.json.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from jaxsys.ginr import data as gd  # noqa: E402
from jaxsys.ginr import model as gm  # noqa: E402
from jaxsys.ginr import scan as gs  # noqa: E402
from jaxsys.ginr import train as gt  # noqa: E402
from jaxsys.train.io import atomic_write_json  # noqa: E402


def jax_variant(cfg_name, batch, **overrides):
    mc = gm.get_config(cfg_name, **overrides)
    tc = gt.TrainConfig(batch_size=batch)
    state = {"s": gt.init_state(jax.random.PRNGKey(0), mc, tc)}

    def step(b):
        state["s"], m = gt.train_step(state["s"], b, mc, tc)
        return float(m["loss"])
    return step


def torch_variant(cfg_name, threads):
    """The PyTorch port with `threads` intra-op threads (set before every step, since variants with
    different thread counts are interleaved in one process)."""
    import torch
    import torch_ginr
    torch.manual_seed(0)
    model = torch_ginr.make(cfg_name)
    opt, sched = torch_ginr.make_optimizer(model)

    def step(b):
        torch.set_num_threads(threads)
        return torch_ginr.train_step(model, opt, sched, torch.from_numpy(b["images"]),
                                     torch.from_numpy(b["coords"]), torch.from_numpy(b["targets"]))
    return step


def scan_memory(B=32, L=80, D=512, N=16):
    """Compiled temp bytes of grad(sum(selective_scan)) per mode (D = 2 * d_inner: both directions)."""
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    u = jax.random.normal(k[0], (B, L, D))
    dl = jax.nn.softplus(jax.random.normal(k[1], (B, L, D)) - 3)
    A = -jax.numpy.tile(jax.numpy.arange(1.0, N + 1), (D, 1))
    Bm, Cm = jax.random.normal(k[2], (B, L, N)), jax.random.normal(k[3], (B, L, N))
    out = {}
    for name, kw in {"associative": dict(mode="associative"), "sequential": dict(mode="sequential"),
                     "sequential+checkpoint": dict(mode="sequential", checkpoint=True),
                     "chunked16": dict(mode="associative", chunk=16),
                     "chunked16+checkpoint": dict(mode="associative", chunk=16, checkpoint=True)}.items():
        g = jax.jit(jax.grad(lambda u, dl, Bm, Cm, kw=kw: gs.selective_scan(u, dl, A, Bm, Cm, **kw).sum(),
                             argnums=(0, 1, 2, 3)))
        ma = g.lower(u, dl, Bm, Cm).compile().memory_analysis()
        out[name] = {"temp_mib": round(ma.temp_size_in_bytes / 2 ** 20, 1)}
    return out


def step_memory(cfg_name, batch, mode):
    mc = gm.get_config(cfg_name, scan_mode=mode)
    tc = gt.TrainConfig(batch_size=batch)
    st = gt.init_state(jax.random.PRNGKey(0), mc, tc)
    b = gd.make_batch(np.zeros((batch, 32, 32, 3), np.uint8), np.arange(batch), 512, np.random.default_rng(0))
    ma = gt.train_step.lower(st, b, mc, tc).compile().memory_analysis()
    return round(ma.temp_size_in_bytes / 2 ** 20, 1)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="fast,balanced")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--coords", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="train steps per variant per round")
    ap.add_argument("--torch-threads", default="1,2",
                    help="PyTorch variants to time, one per intra-op thread count; the ratio is vs the best")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused-directions JAX variant")
    ap.add_argument("--no-memory", action="store_true", help="skip the compiled-memory measurements")
    ap.add_argument("--assoc", action="store_true", help="also time the associative-scan JAX model")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "ginr.json"))
    a = ap.parse_args(argv)
    import torch
    x, _ = gd.load_png20()
    x = np.concatenate([x] * ((a.batch + len(x) - 1) // len(x)))
    rng = np.random.default_rng(0)
    batches = [gd.make_batch(x, np.arange(a.batch), a.coords, rng) for _ in range(4)]
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}",
               "load_avg_at_start": os.getloadavg(), "batch": a.batch, "coords": a.coords, "rounds": a.rounds, "steps_per_round": a.steps,
               "throughput": {}, "memory": {}}
    for cfg in a.configs.split(","):
        variants = {"jax_sequential_unfused": jax_variant(cfg, a.batch, scan_mode="sequential",
                                                          fuse_directions=False)}
        if not a.no_fused:
            variants["jax_sequential"] = jax_variant(cfg, a.batch, scan_mode="sequential", fuse_directions=True)
        if a.assoc:
            variants["jax_associative"] = jax_variant(cfg, a.batch, scan_mode="associative")
        for nt in a.torch_threads.split(","):
            variants[f"torch_{nt}thread"] = torch_variant(cfg, int(nt))
        compile_s = {}
        for n, f in variants.items():
            t0 = time.perf_counter()
            f(batches[0])
            compile_s[n] = round(time.perf_counter() - t0, 1)
            print(f"[{cfg}] {n}: first step (compile/warm-up) {compile_s[n]}s", flush=True)
        times = {n: [] for n in variants}
        for r in range(a.rounds):
            for n, f in variants.items():
                for s in range(a.steps):
                    t0 = time.perf_counter()
                    f(batches[(r * a.steps + s) % len(batches)])
                    times[n].append(time.perf_counter() - t0)
            print(f"[{cfg}] round {r + 1}/{a.rounds}: " + ", ".join(
                f"{n} {a.batch / np.median(t):.1f} img/s" for n, t in times.items()), flush=True)
        base = max(a.batch / np.median(t) for n, t in times.items() if n.startswith("torch"))
        results["throughput"][cfg] = {
            n: {"images_per_s": round(a.batch / float(np.median(t)), 2),
                "step_s_median": round(float(np.median(t)), 4), "first_step_s": compile_s[n],
                "ratio_vs_torch": round(a.batch / float(np.median(t)) / base, 2)} for n, t in times.items()}
    results["load_avg_at_end"] = os.getloadavg()
    if not a.no_memory:
        print("memory ...", flush=True)
        results["memory"]["scan_grad_fast_shapes"] = scan_memory()
        results["memory"]["train_step_fast_temp_mib"] = {m: step_memory("fast", a.batch, m)
                                                         for m in ("sequential", "associative")}
    print(f"\n{'config':<9} {'variant':<24} {'img/s':>8} {'x torch':>8} {'first step s':>12}")
    for cfg, d in results["throughput"].items():
        for n, r in d.items():
            print(f"{cfg:<9} {n:<24} {r['images_per_s']:>8.1f} {r['ratio_vs_torch']:>8.2f} {r['first_step_s']:>12}")
    if not a.no_memory:
        print("\nscan gradient temp memory (B=32, L=80, 2*d_inner=512, N=16):")
        for n, r in results["memory"]["scan_grad_fast_shapes"].items():
            print(f"  {n:<24} {r['temp_mib']:>8.1f} MiB")
        print("train step temp memory (fast):", results["memory"]["train_step_fast_temp_mib"])
    print("load average start / end:", results["load_avg_at_start"], results["load_avg_at_end"])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, results)
    print(f"wrote {a.out}")
    return results


if __name__ == "__main__":
    main()
