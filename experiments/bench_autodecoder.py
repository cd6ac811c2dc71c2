"""Auto-decoder throughput, side by side in one run (interleaved rounds, medians):

- jax microbatch (blocked GEMM form, default chunk), jax microbatch literal per-sample scan
  (chunk = 1), jax strict, jax batched: samples/s of the jitted training burst (in-graph sampling
  included), default net 64x64x64, d = 16, K = 6, float32, micro-batch 256;
- numpy per-sample loop and PyTorch per-sample loop of the same micro-batch rule, and a PyTorch
  autograd per-sample (strict) loop, on pre-drawn samples (sampling not timed);
- reconstruction of a 256x256 image: row-batched and whole-image.

Before timing, the baselines are checked to compute the same update as the JAX rule (float64).

    flock /tmp/jaxsys-heavy.lock python experiments/bench_autodecoder.py
"""

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_autodecoder as base  # noqa: E402

from jaxsys.autodecoder import recon  # noqa: E402
from jaxsys.autodecoder.sampler import SamplerConfig, sample_jit  # noqa: E402
from jaxsys.autodecoder.train import TrainConfig, data_keys, init_state, train_step  # noqa: E402
from jaxsys.train.io import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _np_state(cfg: TrainConfig, dtype):
    st = init_state(jax.random.key(cfg.seed), cfg)
    Ws = [np.array(W, dtype) for W in st.params["W"]]
    bs = [np.array(b, dtype) for b in st.params["b"]]
    return Ws, bs, np.array(st.latents, dtype)


def check_baselines(cfg: TrainConfig) -> float:
    """Max |diff| between numpy, torch and JAX microbatch after 3 micro-batches (float64)."""
    from jaxsys.autodecoder import schedules as S

    hp = cfg.sched
    mcfg = dataclasses.replace(cfg.model, dtype="float64")
    B = 32
    st = init_state(jax.random.key(cfg.seed), cfg)
    P = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), st.params)
    Z = jnp.asarray(st.latents, jnp.float64) + 0.3
    Ws = [np.array(W) for W in P["W"]]
    bs = [np.array(b) for b in P["b"]]
    Zn = np.array(Z)
    Wt, bt, Zt = [W.copy() for W in Ws], [b.copy() for b in bs], Zn.copy()
    args = (hp.lr_w * 30, hp.lr_z * 30, hp.lambda_z, hp.lambda_w)
    hp = dataclasses.replace(hp, lr_w=args[0], lr_z=args[1])
    for k in range(3):
        b = sample_jit(jax.random.PRNGKey(k), B, cfg.sampler, jnp.float64)
        P, Z = jax.jit(S.update, static_argnums=(4, 5))(P, Z, (), b, mcfg, hp)[:2]
        enc = base.encode_np(np.asarray(b.p), cfg.model.num_freqs)
        Ws, bs, Zn = base.numpy_microbatch(Ws, bs, Zn, enc, np.asarray(b.t), np.asarray(b.s), B, *args)
        Wt, bt, Zt = base.torch_microbatch(Wt, bt, Zt, enc, np.asarray(b.t), np.asarray(b.s), B, *args)
    diffs = [np.max(np.abs(np.asarray(a) - c)) for a, c in zip(P["W"] + P["b"] + [Z], Ws + bs + [Zn])]
    diffs += [np.max(np.abs(a - c)) for a, c in zip(Ws + bs + [Zn], Wt + bt + [Zt])]
    return float(max(diffs))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "runs/bench/autodecoder.json"))
    args = ap.parse_args()
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    base_cfg = TrainConfig()
    hp = base_cfg.sched
    jax.config.update("jax_enable_x64", True)
    max_diff = check_baselines(base_cfg)
    print(f"baseline parity (numpy vs torch vs jax microbatch, float64, 3 micro-batches): max |diff| = {max_diff:.2e}")
    jax.config.update("jax_enable_x64", False)

    jax_alts = {
        "jax microbatch (blocked, chunk 32)": (dataclasses.replace(hp, chunk=32), 400),
        "jax microbatch (blocked, chunk 64)": (dataclasses.replace(hp, chunk=64), 400),
        "jax microbatch (literal scan)": (dataclasses.replace(hp, chunk=1, unroll=1), 100),
        "jax microbatch (literal scan, unroll 4)": (dataclasses.replace(hp, chunk=1, unroll=4), 100),
        "jax strict": (dataclasses.replace(hp, name="strict", unroll=1), 60),
        "jax batched (Adam)": (dataclasses.replace(hp, name="batched"), 400),
    }
    runners = {}
    for name, (sched, n) in jax_alts.items():
        cfg = dataclasses.replace(base_cfg, sched=sched)
        key = jax.random.key(cfg.seed)
        st = {"s": init_state(key, cfg)}
        keys = data_keys(key, cfg)
        t0 = time.perf_counter()
        st["s"], loss, _ = train_step(st["s"], keys, cfg=cfg.step_config(), n_steps=n)
        loss.block_until_ready()
        print(f"compiled {name} in {time.perf_counter() - t0:.1f}s")

        def run(cfg=cfg, st=st, keys=keys, n=n):
            st["s"], loss, _ = train_step(st["s"], keys, cfg=cfg.step_config(), n_steps=n)
            loss.block_until_ready()
            return n * cfg.batch_size

        runners[name] = run

    # baselines on pre-drawn float32 samples
    N = 16384
    b = sample_jit(jax.random.PRNGKey(0), N, SamplerConfig(), jnp.float32)
    enc = base.encode_np(np.asarray(b.p, np.float64), base_cfg.model.num_freqs).astype(np.float32)
    t, s = np.asarray(b.t), np.asarray(b.s)
    lr = (hp.lr_w, hp.lr_z, hp.lambda_z, hp.lambda_w)
    Bm = base_cfg.batch_size

    def np_run(n=8192):
        Ws, bs, Z = _np_state(base_cfg, np.float32)
        base.numpy_microbatch(Ws, bs, Z, enc[:n], t[:n], s[:n], Bm, *lr)
        return n

    def torch_run(n=2048):
        Ws, bs, Z = _np_state(base_cfg, np.float32)
        base.torch_microbatch(Ws, bs, Z, enc[:n], t[:n], s[:n], Bm, *lr)
        return n

    def torch_ag_run(n=1024):
        Ws, bs, Z = _np_state(base_cfg, np.float32)
        base.torch_autograd_strict(Ws, bs, Z, enc[:n], t[:n], s[:n], *lr)
        return n

    runners["numpy per-sample loop (microbatch rule)"] = np_run
    runners["torch per-sample loop (microbatch rule)"] = torch_run
    runners["torch autograd per-sample loop (strict)"] = torch_ag_run
    torch_run(256)

    rates = {k: [] for k in runners}
    for r in range(args.rounds):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t0))
        print(f"round {r + 1}/{args.rounds} done")
    med = {k: float(np.median(v)) for k, v in rates.items()}

    # reconstruction of a 256x256 image
    cfg = base_cfg
    st = init_state(jax.random.key(cfg.seed), cfg)
    z = st.latents[0]
    rec = {}
    for name, fn in [
        ("row-batched (256 forwards of B=256)", recon.render_rows),
        ("whole image (vmapped)", recon.render_image),
    ]:
        fn(st.params, z, cfg.model, 256).block_until_ready()
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            fn(st.params, z, cfg.model, 256).block_until_ready()
            ts.append(time.perf_counter() - t0)
        rec[name] = float(np.median(ts)) * 1e3

    ref = med["numpy per-sample loop (microbatch rule)"]
    print(f"\n{'alternative':<44} {'samples/s':>12} {'x numpy':>8}")
    for k, v in med.items():
        print(f"{k:<44} {v:>12,.0f} {v / ref:>8.2f}")
    print("\n256x256 reconstruction:")
    for k, v in rec.items():
        print(f"  {k:<40} {v:8.2f} ms")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {threads} CPU cores (shared)",
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": threads,
        "config": {
            "hidden": list(cfg.model.hidden),
            "latent_dim": cfg.model.latent_dim,
            "num_freqs": cfg.model.num_freqs,
            "batch": cfg.batch_size,
            "dtype": cfg.model.dtype,
        },
        "rounds": args.rounds,
        "samples_per_s_median": med,
        "samples_per_s_all": rates,
        "ratio_vs_numpy": {k: v / ref for k, v in med.items()},
        "recon_256_ms_median": rec,
        "baseline_parity_max_abs_diff_f64": max_diff,
        "command": "flock /tmp/jaxsys-heavy.lock python experiments/bench_autodecoder.py",
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
