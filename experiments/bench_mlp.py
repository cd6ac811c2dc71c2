"""MLP train-step throughput, side by side in one run, interleaved rounds, medians and ratios.

    (a) jax_hand          hand-derived backward + hand Adam      (jaxsys.mlp.train.train_step)
    (b) jax_autodiff      jax.value_and_grad + optax.adam        (same jitted step, other StepConfig)
    (c) torch_eager       PyTorch CPU eager, torch.optim.Adam    (experiments/torch_mlp.py)
    (a') jax_hand_scanK   (a) with K steps per call               (jaxsys.mlp.train.train_steps, lax.scan)
    (d) torch_compile     the same step under torch.compile      (if it works here)

Sizes 784-512-512-10, float32, softmax cross-entropy, B in {64, 1024}, 2 threads for both (XLA's
CPU client uses one thread per core = 2 here; torch.set_num_threads(2)). Also the float32 matmul
"roof" at exactly the step's 8 matmul shapes, XLA (jnp.dot, jitted) vs torch.mm (MKL/oneDNN), and a
sweep of XLA CPU flags (each in a fresh worker process, with torch re-measured beside it). Also a
1024^3 matmul per library (the practical float32 peak) and the hand Adam update alone, which give
the bound no float32 step can beat here: all matmul FLOPs at the best GFLOP/s seen + the Adam pass.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_mlp.py            # full run -> runs/bench/mlp.json
    python experiments/bench_mlp.py --rounds 2 --seconds 0.2 --no-sweep    # quick look
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (784, 512, 512, 10)

FLAG_SETS = {  # XLA CPU flags tried to close the matmul gap (values from the flag help in jaxlib)
    "default": "",
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "onednn_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "onednn_custom_call": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
}


def matmul_shapes(batch: int, sizes=SIZES) -> list[tuple[int, int, int]]:
    """(M, K, N) of the 8 matmuls of one train step: forward Z_l, backward dW_l and dA_{l-1}."""
    fwd = [(batch, i, o) for i, o in zip(sizes[:-1], sizes[1:])]
    dw = [(o, batch, i) for i, o in zip(sizes[:-1], sizes[1:])]
    da = [(batch, o, i) for i, o in zip(sizes[1:-1], sizes[2:])]
    return fwd + dw + da


# ---- the timed alternatives ---------------------------------------------------------------------


def jax_method(batch: int, grad: str, opt: str):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsys.mlp.adam import AdamConfig
    from jaxsys.mlp.model import MLPConfig
    from jaxsys.mlp.train import StepConfig, init_state, train_step

    cfg = StepConfig(MLPConfig(SIZES, "classify"), AdamConfig(opt), grad)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, SIZES[0])).astype(np.float32))
    y = jnp.asarray(rng.integers(0, SIZES[-1], batch).astype(np.int32))
    box = [init_state(jax.random.PRNGKey(0), cfg)]

    def run(n: int) -> float:
        state = box[0]
        for _ in range(n):
            state, m = train_step(state, x, y, cfg=cfg)
        loss = float(m["loss"])  # waits for the last step
        box[0] = state
        return loss

    return run


def jax_scan_method(batch: int, k: int):
    """(a) again, but K steps per call: jaxsys.mlp.train.train_steps (lax.scan over K batches)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsys.mlp.adam import AdamConfig
    from jaxsys.mlp.model import MLPConfig
    from jaxsys.mlp.train import StepConfig, init_state, train_steps

    cfg = StepConfig(MLPConfig(SIZES, "classify"), AdamConfig("hand"), "hand")
    rng = np.random.default_rng(0)
    xs = jnp.asarray(np.broadcast_to(rng.normal(size=(batch, SIZES[0])).astype(np.float32), (k, batch, SIZES[0])))
    ys = jnp.asarray(np.broadcast_to(rng.integers(0, SIZES[-1], batch).astype(np.int32), (k, batch)))
    box = [init_state(jax.random.PRNGKey(0), cfg)]

    def run(n: int) -> float:  # n steps, rounded up to whole calls of k
        state = box[0]
        for _ in range(-(-n // k)):
            state, m = train_steps(state, xs, ys, cfg=cfg)
        loss = float(m["loss"][-1])
        box[0] = state
        return loss

    run.steps_per_call = k
    return run


def adam_only_method():
    """The hand Adam update (moments + bias correction + apply) alone on the 784-512-512-10 params:
    what the optimizer costs when nothing else runs."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxsys.mlp.model import MLPConfig, init_params
    from jaxsys.nn.optim import adam

    opt = adam(1e-3)
    params = init_params(jax.random.PRNGKey(0), MLPConfig(SIZES, "classify"))
    grads = jax.tree_util.tree_map(lambda p: 1e-3 * jnp.ones_like(p), params)

    k = 10  # updates per call (a fori_loop), so that call dispatch is not counted as Adam's cost

    def _upd(p, s, g):
        def body(_, ps):
            u, s_ = opt.update(g, ps[1], ps[0])
            return optax.apply_updates(ps[0], u), s_

        return jax.lax.fori_loop(0, k, body, (p, s))

    upd = jax.jit(_upd, donate_argnums=(0, 1))
    box = [(params, opt.init(params))]

    def run(n: int):
        p, s = box[0]
        for _ in range(-(-n // k)):
            p, s = upd(p, s, grads)
        jax.block_until_ready(p)
        box[0] = (p, s)

    run.steps_per_call = k
    return run


def peak_methods(n: int = 1024) -> dict:
    """One large square float32 matmul per library: the machine's practical matmul peak."""
    return {"xla_peak": xla_matmul_method((n, n, n)), "torch_peak": torch_matmul_method((n, n, n))}


def torch_method(batch: int, compiled: bool):
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from torch_mlp import make_step

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(batch, SIZES[0])).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, SIZES[-1], batch).astype(np.int64))
    step = make_step(SIZES, compiled=compiled)

    def run(n: int) -> float:
        for _ in range(n):
            loss = step(x, y)
        return float(loss)

    return run


def xla_matmul_method(shape):
    import jax
    import jax.numpy as jnp
    import numpy as np

    m, k, n = shape
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(m, k)).astype(np.float32))
    b = jnp.asarray(rng.normal(size=(k, n)).astype(np.float32))
    f = jax.jit(jnp.dot)

    def run(reps: int):
        for _ in range(reps):
            c = f(a, b)
        c.block_until_ready()

    return run


def torch_matmul_method(shape):
    import torch

    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)

    def run(reps: int):
        for _ in range(reps):
            torch.mm(a, b)

    return run


def interleaved(methods: dict, rounds: int, seconds: float) -> dict:
    """Median calls/s of each method over `rounds` interleaved blocks of ~`seconds` each."""
    reps = {}
    for name, run in methods.items():  # warm up (compiles) and calibrate
        run(2)
        t0 = time.perf_counter()
        run(3)
        per = (time.perf_counter() - t0) / 3
        reps[name] = max(3, int(seconds / max(per, 1e-7)))
    rates = {name: [] for name in methods}
    names = list(methods)
    for i in range(rounds):  # a different order each round, so no method always follows the same one
        for name in names[i % len(names) :] + names[: i % len(names)]:
            run, n = methods[name], reps[name]
            k = getattr(run, "steps_per_call", 1)
            n = -(-n // k) * k
            t0 = time.perf_counter()
            run(n)
            rates[name].append(n / (time.perf_counter() - t0))
    return {
        name: {"median_per_s": statistics.median(r), "rates": [round(v, 2) for v in r], "reps_per_block": reps[name]}
        for name, r in rates.items()
    }


def roof_methods(batch: int, libs=("xla", "torch")) -> dict:
    """Timed single matmuls at the step's 8 shapes (timed interleaved with the step methods)."""
    out = {}
    for s in matmul_shapes(batch):
        if "xla" in libs:
            out[f"xla{s}"] = xla_matmul_method(s)
        if "torch" in libs:
            out[f"torch{s}"] = torch_matmul_method(s)
    return out


def roof_summary(batch: int, r: dict, libs=("xla", "torch")) -> dict:
    """The roof = 1 / (sum of the 8 per-matmul times): the step rate if nothing but matmuls ran."""
    shapes = matmul_shapes(batch)
    out = {"shapes": [list(s) for s in shapes]}
    for lib in libs:
        t = [1.0 / r[f"{lib}{s}"]["median_per_s"] for s in shapes]
        out[f"{lib}_us_per_matmul"] = [round(1e6 * v, 1) for v in t]
        out[f"{lib}_gflops_per_matmul"] = [round(2 * m * k * n / v / 1e9, 1) for (m, k, n), v in zip(shapes, t)]
        out[f"{lib}_roof_steps_per_s"] = 1.0 / sum(t)
        out[f"{lib}_gflops_total"] = sum(2 * m * k * n for m, k, n in shapes) / sum(t) / 1e9
    if len(libs) == 2:
        out["xla_over_torch_roof"] = out["xla_roof_steps_per_s"] / out["torch_roof_steps_per_s"]
    return out


# ---- modes ----------------------------------------------------------------------------------------


def worker(args) -> dict:
    """Used by the flag sweep: the (a) step and the XLA matmul roof under this process's XLA_FLAGS."""
    res = {}
    for b in args.batches:
        r = interleaved(
            {"jax_hand": jax_method(b, "hand", "hand"), **roof_methods(b, ("xla",))}, args.rounds, args.seconds
        )
        res[str(b)] = {"jax_hand_steps_per_s": r["jax_hand"]["median_per_s"], "roof": roof_summary(b, r, ("xla",))}
    return res


def sweep(args) -> dict:
    out = {}
    for name, flags in FLAG_SETS.items():
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--rounds",
            str(args.sweep_rounds),
            "--seconds",
            str(args.seconds),
            "--batches",
            ",".join(map(str, args.batches)),
        ]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            out[name] = {"flags": flags, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
            print(f"  flags {name}: failed: {out[name]['error']}", flush=True)
            continue
        res = json.loads(p.stdout.strip().splitlines()[-1])
        out[name] = {"flags": flags, "seconds": round(time.perf_counter() - t0, 1), **res}
        line = "  ".join(
            f"B={b}: jax_hand {r['jax_hand_steps_per_s']:7.1f} steps/s, XLA matmul roof "
            f"{r['roof']['xla_roof_steps_per_s']:7.1f} ({r['roof']['xla_gflops_total']:.0f} GFLOP/s)"
            for b, r in res.items()
        )
        print(f"  flags {name:20s} {line}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over these)")
    ap.add_argument("--seconds", type=float, default=0.3, help="target seconds per timed block")
    ap.add_argument("--batches", default="64,1024")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (XLA uses all cores)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--scan-k", type=int, default=10, help="steps per call of the train_steps variant")
    ap.add_argument("--no-sweep", action="store_true", help="skip the XLA flag sweep")
    ap.add_argument("--sweep-rounds", type=int, default=2, help="interleaved rounds per flag set")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE.parent / "runs" / "bench" / "mlp.json"))
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import jax
    import torch

    torch.set_num_threads(args.threads)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sizes": list(SIZES),
        "dtype": "float32",
        "rounds": args.rounds,
        "seconds_per_block": args.seconds,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": "python " + " ".join(sys.argv),
        "loadavg_start": os.getloadavg(),
    }
    results = {"meta": meta, "batches": {}}
    for b in args.batches:
        methods = {
            "jax_hand": jax_method(b, "hand", "hand"),
            "jax_autodiff_optax": jax_method(b, "autodiff", "optax"),
            f"jax_hand_scan{args.scan_k}": jax_scan_method(b, args.scan_k),
            "torch_eager": torch_method(b, False),
        }
        notes = {}
        if not args.no_compile:
            try:
                t0 = time.perf_counter()
                tc = torch_method(b, True)
                tc(3)
                methods["torch_compile"] = tc
                notes["torch_compile_warmup_s"] = round(time.perf_counter() - t0, 1)
            except Exception as e:  # inductor needs a working C++ toolchain
                notes["torch_compile_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"B={b}: timing {list(methods)} ...", flush=True)
        both = interleaved(
            {**methods, **roof_methods(b), **peak_methods(), "adam_only": adam_only_method()}, args.rounds, args.seconds
        )
        steps = {k: both[k] for k in methods}
        r = roof_summary(b, both)
        flops = sum(2 * m * k * n for m, k, n in matmul_shapes(b))
        adam_s = 1.0 / both["adam_only"]["median_per_s"]
        for lib in ("xla", "torch"):
            gf = 2 * 1024**3 * both[f"{lib}_peak"]["median_per_s"] / 1e9
            r[f"{lib}_peak_gflops_1024"] = gf
        best = max(
            r["xla_peak_gflops_1024"], r["torch_peak_gflops_1024"], r["xla_gflops_total"], r["torch_gflops_total"]
        )
        r["adam_only_us"] = 1e6 * adam_s
        # what no float32 step can beat here: every matmul at the best GFLOP/s measured on this
        # machine (large square or the step's own shapes, either library) plus the optimizer pass
        r["bound_steps_per_s"] = 1.0 / (flops / (best * 1e9) + adam_s)
        r["bound_gflops_used"] = best
        eager = steps["torch_eager"]["median_per_s"]
        ratios = {f"{k}_over_torch_eager": v["median_per_s"] / eager for k, v in steps.items()}
        ratios["jax_hand_over_jax_autodiff_optax"] = (
            steps["jax_hand"]["median_per_s"] / steps["jax_autodiff_optax"]["median_per_s"]
        )
        ratios["jax_hand_over_xla_roof"] = steps["jax_hand"]["median_per_s"] / r["xla_roof_steps_per_s"]
        ratios["torch_eager_over_torch_roof"] = eager / r["torch_roof_steps_per_s"]
        ratios["bound_over_torch_eager"] = r["bound_steps_per_s"] / eager
        ratios["jax_hand_over_bound"] = steps["jax_hand"]["median_per_s"] / r["bound_steps_per_s"]
        results["batches"][str(b)] = {"steps_per_s": steps, "ratios": ratios, "matmul_roof": r, **notes}
    if not args.no_sweep:
        print("XLA flag sweep (fresh process per flag set; jax step + XLA matmul roof):", flush=True)
        results["flag_sweep"] = sweep(args)
    meta["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")
    return 0


def print_table(results: dict) -> None:
    m = results["meta"]
    print(f"load average (1/5/15 min) at start {m['loadavg_start']}, end {m.get('loadavg_end')}")
    for b, r in results["batches"].items():
        s = r["steps_per_s"]
        print(f"\nB={b}  (steps/s, median of {results['meta']['rounds']} interleaved rounds)")
        for k, v in s.items():
            print(f"  {k:22s} {v['median_per_s']:9.1f}   x{r['ratios'][f'{k}_over_torch_eager']:.2f} vs torch eager")
        m = r["matmul_roof"]
        print(
            f"  matmul roof (8 matmuls/step): XLA {m['xla_roof_steps_per_s']:.1f} steps/s "
            f"({m['xla_gflops_total']:.1f} GFLOP/s), torch {m['torch_roof_steps_per_s']:.1f} steps/s "
            f"({m['torch_gflops_total']:.1f} GFLOP/s), XLA/torch {m['xla_over_torch_roof']:.2f}"
        )
        print(
            f"  hand / autodiff+optax {r['ratios']['jax_hand_over_jax_autodiff_optax']:.2f}; "
            f"hand / XLA roof {r['ratios']['jax_hand_over_xla_roof']:.2f}; "
            f"torch eager / torch roof {r['ratios']['torch_eager_over_torch_roof']:.2f}"
        )
        print(
            f"  float32 peak, 1024^3 matmul: XLA {m['xla_peak_gflops_1024']:.0f} GFLOP/s, torch "
            f"{m['torch_peak_gflops_1024']:.0f} GFLOP/s; hand Adam alone {m['adam_only_us']:.0f} us"
        )
        print(
            f"  bound (all matmuls at {m['bound_gflops_used']:.0f} GFLOP/s + Adam): "
            f"{m['bound_steps_per_s']:.1f} steps/s = x{r['ratios']['bound_over_torch_eager']:.2f} torch eager; "
            f"hand at {r['ratios']['jax_hand_over_bound']:.2f} of it"
        )
        for k in ("torch_compile_error", "torch_compile_warmup_s"):
            if k in r:
                print(f"  {k}: {r[k]}")


if __name__ == "__main__":
    sys.exit(main())
