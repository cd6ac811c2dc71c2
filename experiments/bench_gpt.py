"""GPT training throughput side by side in one run: the hand-derived JAX engine, the jax.grad engine,
PyTorch CPU (eager manual attention, eager scaled_dot_product_attention, torch.compile; 2 and 1
intra-op threads; optional bf16 autocast), the jaxsys engines in float32 and with bf16 matmul
operands (f32 accumulation), the scalar
`Value` engine (tiny config, extrapolated by FLOPs), MFU against measured float32 matmul peaks,
and XLA CPU flag variants (each in its own process, interleaved with a baseline process).

    flock /tmp/jaxsys-heavy.lock python experiments/bench_gpt.py            # ~5 min
    python experiments/bench_gpt.py --quick                                 # smoke run

Writes runs/bench/gpt_bench.json (or --out) and prints a table with ratios. Variants are measured
in interleaved rounds (round r runs every variant once), and medians are reported, because the
machine is shared and timings drift.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE.parent / "runs" / "bench" / "gpt_bench.json"

BENCH = dict(vocab_size=66, n_embd=128, n_head=4, n_layer=6, block_size=512)
B, T = 4, 512


def load_avg() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------------------------
# variants: each is (setup() -> run(n_steps) -> seconds)


def jax_variant(engine: str, dtype: str = "float32", matmul_dtype: str = "float32"):
    import jax
    import jax.numpy as jnp

    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.train import TrainConfig, init_state, train_step

    cfg = GPTConfig(**BENCH)
    tcfg = TrainConfig(steps=10_000, batch_size=B, engine=engine, dtype=dtype, matmul_dtype=matmul_dtype)
    rng = np.random.default_rng(0)
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, T + 1)), jnp.int32)
    x, y, m = tok[:, :-1], tok[:, 1:], jnp.ones((B, T), jnp.float32)
    step_cfg = tcfg.step_config(cfg)
    box = {"state": init_state(jax.random.key(0), step_cfg)}

    def run(n: int) -> float:
        t0 = time.perf_counter()
        st = box["state"]
        for _ in range(n):
            st, loss = train_step(st, x, y, m, cfg=step_cfg)
        jax.block_until_ready(loss)
        box["state"] = st
        return time.perf_counter() - t0

    return run


def torch_variant(attn: str, compiled: bool = False, threads: int | None = None, autocast_bf16: bool = False):
    import contextlib

    import torch
    from torch_gpt import TorchGPT, TorchTrainer

    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    model = TorchGPT(
        BENCH["vocab_size"], BENCH["n_embd"], BENCH["n_head"], BENCH["n_layer"], BENCH["block_size"], attn=attn
    )
    tr = TorchTrainer(model, 0.01, steps=10_000, compiled=compiled)
    rng = np.random.default_rng(0)
    tok = torch.from_numpy(rng.integers(0, BENCH["vocab_size"], (B, T + 1)))
    x, y = tok[:, :-1].contiguous(), tok[:, 1:].contiguous()

    def run(n: int) -> float:
        torch.set_num_threads(threads)  # a global setting: the variants alternate
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast_bf16 else contextlib.nullcontext()
        t0 = time.perf_counter()
        with ctx:
            for _ in range(n):
                tr.step(x, y)
        return time.perf_counter() - t0

    return run


def make_variant(name: str):
    return {
        "jax_hand": lambda: jax_variant("hand"),
        "jax_autodiff": lambda: jax_variant("autodiff"),
        "jax_hand_bf16": lambda: jax_variant("hand", matmul_dtype="bfloat16"),
        "jax_autodiff_bf16": lambda: jax_variant("autodiff", matmul_dtype="bfloat16"),
        "torch_manual": lambda: torch_variant("manual"),
        "torch_sdpa": lambda: torch_variant("sdpa"),
        "torch_manual_1thread": lambda: torch_variant("manual", threads=1),
        "torch_sdpa_1thread": lambda: torch_variant("sdpa", threads=1),
        "torch_compile_sdpa": lambda: torch_variant("sdpa", compiled=True),
        "torch_compile_sdpa_1thread": lambda: torch_variant("sdpa", compiled=True, threads=1),
        "torch_sdpa_bf16_autocast": lambda: torch_variant("sdpa", autocast_bf16=True),
        "torch_sdpa_bf16_autocast_1thread": lambda: torch_variant("sdpa", threads=1, autocast_bf16=True),
    }[name]()


# the PyTorch variants (float32): "best PyTorch" is the best median among these
TORCH_F32 = (
    "torch_manual",
    "torch_sdpa",
    "torch_manual_1thread",
    "torch_sdpa_1thread",
    "torch_compile_sdpa",
    "torch_compile_sdpa_1thread",
)


def measure_interleaved(names: list[str], rounds: int, steps: int, log) -> dict:
    runs, out = {}, {}
    for n in names:
        t0 = time.perf_counter()
        try:
            run = make_variant(n)
            run(1)  # compile / warm-up
            run(1)
        except Exception as e:  # e.g. torch.compile without a working toolchain
            log(f"  {n}: unavailable ({type(e).__name__}: {str(e)[:200]})")
            out[n] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        log(f"  {n}: ready after {time.perf_counter() - t0:.1f}s (compile + 2 steps)")
        runs[n] = run
        out[n] = {"tokens_per_s_rounds": [], "warmup_seconds": time.perf_counter() - t0}
    loads = []
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]  # alternate to cancel drift
        for n in order:
            dt = runs[n](steps)
            out[n]["tokens_per_s_rounds"].append(steps * B * T / dt)
        loads.append(load_avg())
        log(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {out[n]['tokens_per_s_rounds'][-1]:.0f}" for n in runs)
            + f"  (load {loads[-1]:.1f})"
        )
    for n in runs:
        out[n]["tokens_per_s"] = statistics.median(out[n]["tokens_per_s_rounds"])
    out["_load_avg_per_round"] = loads
    return out


def ratios(train: dict) -> dict:
    """Median and per-round ratios (same round, interleaved) of every jax variant against its
    jax.grad counterpart and against every torch variant."""
    ok = {n: r for n, r in train.items() if isinstance(r, dict) and "tokens_per_s" in r}
    torch_f32 = [n for n in ok if n in TORCH_F32]
    best = max(torch_f32, key=lambda n: ok[n]["tokens_per_s"]) if torch_f32 else None
    res = {"best_torch_f32": best}
    for n in ok:
        if not n.startswith("jax_"):
            continue
        row = {}
        others = [n.replace("hand", "autodiff")] if "hand" in n else []
        others += [m for m in ok if m.startswith("torch")]
        for m in others:
            if m not in ok or m == n:
                continue
            per = [a / b for a, b in zip(ok[n]["tokens_per_s_rounds"], ok[m]["tokens_per_s_rounds"])]
            row[m] = {
                "median_ratio": ok[n]["tokens_per_s"] / ok[m]["tokens_per_s"],
                "per_round": per,
                "median_of_per_round": statistics.median(per),
            }
        if best:
            row["best_torch_f32"] = row[best]
        res[n] = row
    return res


# ------------------------------------------------------------------------------------------------
# matmul peaks

MM_SHAPES = [(1024, 1024, 1024), (2048, 128, 512), (2048, 512, 128), (2048, 128, 128)]


def matmul_peaks(reps: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(os.cpu_count())
    res = {}
    f32 = jax.jit(lambda a, b: a @ b)
    bf16 = jax.jit(
        lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    )
    for m, k, n in MM_SHAPES:
        a = jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32)
        ta, tb = torch.randn(m, k), torch.randn(k, n)
        tab, tbb = ta.bfloat16(), tb.bfloat16()
        f32(a, b).block_until_ready()
        bf16(a, b).block_until_ready()
        flops = 2 * m * k * n * reps
        row = {"xla_f32": [], "xla_bf16_in_f32_acc": [], "torch_f32": [], "torch_bf16": [], "torch_f32_1thread": []}
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                c = f32(a, b)
            c.block_until_ready()
            row["xla_f32"].append(flops / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            for _ in range(reps):
                c = bf16(a, b)
            c.block_until_ready()
            row["xla_bf16_in_f32_acc"].append(flops / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(ta, tb)
            row["torch_f32"].append(flops / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(tab, tbb)
            row["torch_bf16"].append(flops / (time.perf_counter() - t0) / 1e9)
            torch.set_num_threads(1)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(ta, tb)
            row["torch_f32_1thread"].append(flops / (time.perf_counter() - t0) / 1e9)
            torch.set_num_threads(os.cpu_count())
        res[f"{m}x{k}x{n}"] = {k2: max(v) for k2, v in row.items()}
    peaks = {k2: max(r[k2] for r in res.values()) for k2 in next(iter(res.values()))}
    peaks["torch_f32"] = max(peaks["torch_f32"], peaks.pop("torch_f32_1thread"))
    return {"gflops_by_shape": res, "peak_gflops": peaks}


# ------------------------------------------------------------------------------------------------
# where the hand engine's time goes (forward / loss_and_grads / full step)


def breakdown(steps: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxsys.gpt import model
    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.train import TrainConfig, init_state, train_step

    cfg = GPTConfig(**BENCH)
    tcfg = TrainConfig(steps=10_000, batch_size=B)
    rng = np.random.default_rng(0)
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, T + 1)), jnp.int32)
    x, y, m = tok[:, :-1], tok[:, 1:], jnp.ones((B, T), jnp.float32)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    fwd = jax.jit(lambda p, x: model.forward(p, x, cfg)[0])
    lag = {e: jax.jit(model.loss_and_grads_fn(e), static_argnames="cfg") for e in ("hand", "autodiff")}
    step_cfg = tcfg.step_config(cfg)
    st = init_state(jax.random.key(0), step_cfg)
    fns = {
        "forward": lambda: fwd(params, x),
        "loss_and_grads_hand": lambda: lag["hand"](params, x, y, m, cfg),
        "loss_and_grads_autodiff": lambda: lag["autodiff"](params, x, y, m, cfg),
    }
    out = {}
    for k, f in fns.items():
        jax.block_until_ready(f())
        out[k] = []
    box = {"st": st}

    def full():
        s = box["st"]
        s, loss = train_step(s, x, y, m, cfg=step_cfg)
        box["st"] = s
        return loss

    jax.block_until_ready(full())
    fns["train_step_hand"] = full
    out["train_step_hand"] = []
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                r = f()
            jax.block_until_ready(r)
            out[k].append((time.perf_counter() - t0) / steps * 1e3)
    return {k: {"ms_median": statistics.median(v)} for k, v in out.items()}


# ------------------------------------------------------------------------------------------------
# scalar engine


def scalar_engine(seconds: float) -> dict:
    import jax

    from jaxsys.gpt import model
    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.scalar import Gpt

    tiny = GPTConfig(vocab_size=27, n_embd=16, n_head=4, n_layer=1, block_size=16)
    p = {
        k: np.asarray(v, np.float64)
        for k, v in model.init_params(jax.random.PRNGKey(0), tiny, dtype=np.float32).items()
    }
    g = Gpt(p, n_layer=tiny.n_layer, n_head=tiny.n_head)
    rng = np.random.default_rng(0)
    Tt = 16
    toks = rng.integers(0, 27, (1, Tt + 1))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        g.loss_and_grads(toks[:, :-1], toks[:, 1:])
        g.adam_step(n, 1000)
        n += 1
    dt = time.perf_counter() - t0
    tps = n * Tt / dt
    fpt_tiny = model.flops_per_token(tiny, Tt)
    big = GPTConfig(**BENCH)
    fpt_big = model.flops_per_token(big, T)
    flops_per_s = tps * fpt_tiny
    return {
        "config": tiny.to_dict(),
        "seq_len": Tt,
        "steps": n,
        "tokens_per_s": tps,
        "flops_per_token_tiny": fpt_tiny,
        "effective_gflops": flops_per_s / 1e9,
        "flops_per_token_bench": fpt_big,
        "extrapolated_tokens_per_s_at_bench_config": flops_per_s / fpt_big,
    }


# ------------------------------------------------------------------------------------------------
# XLA flag variants: one process per flag set, interleaved with baseline processes

FLAG_SETS = {
    "baseline": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
    "single_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
}
ENV_SETS = {"matmul_precision_bf16": {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}}


def worker(args) -> None:
    run = jax_variant(args.worker_engine)
    run(1)
    run(1)
    vals = [args.steps * B * T / run(args.steps) for _ in range(args.rounds)]
    print("RESULT " + json.dumps({"tokens_per_s": statistics.median(vals), "rounds": vals}))


def flag_sweep(repeats: int, rounds: int, steps: int, log) -> dict:
    sets = {**{k: {"XLA_FLAGS": v} for k, v in FLAG_SETS.items()}, **ENV_SETS}
    res = {k: {"env": v, "tokens_per_s_runs": []} for k, v in sets.items()}
    for rep in range(repeats):
        for name, env in sets.items():
            e = {**os.environ, **env}
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--worker-engine",
                "hand",
                "--rounds",
                str(rounds),
                "--steps",
                str(steps),
            ]
            p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                res[name]["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
                log(f"  {name}: failed: {res[name]['error']}")
                continue
            r = json.loads(line[0][7:])
            res[name]["tokens_per_s_runs"].append(r["tokens_per_s"])
            log(f"  rep {rep + 1} {name}: {r['tokens_per_s']:.0f} tokens/s (load {load_avg():.1f})")
    for v in res.values():
        if v["tokens_per_s_runs"]:
            v["tokens_per_s"] = statistics.median(v["tokens_per_s_runs"])
    base = res["baseline"].get("tokens_per_s")
    for v in res.values():
        if base and "tokens_per_s" in v:
            v["vs_baseline"] = v["tokens_per_s"] / base
    return res


# ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--quick", action="store_true", help="1 round, no flag sweep, no compile")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-flags", action="store_true", help="skip the XLA flag sweep")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--variants", default=None, help="comma-separated training variants (default: all but the bf16 autodiff)"
    )
    ap.add_argument("--no-breakdown", action="store_true", help="skip the hand engine breakdown")
    ap.add_argument("--no-scalar", action="store_true", help="skip the scalar engine")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-engine", default="hand", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.rounds, args.steps, args.no_compile, args.no_flags = 1, 1, True, True

    def log(s):
        print(s, flush=True)

    import jax
    import torch

    from jaxsys.gpt import model
    from jaxsys.gpt.config import GPTConfig

    cfg = GPTConfig(**BENCH)
    fpt = model.flops_per_token(cfg, T)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPU cores",
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
        "config": {**BENCH, "batch": B, "seq_len": T, "dtype": "float32"},
        "flops_per_token": fpt,
        "load_avg_start": load_avg(),
        "command": "python experiments/bench_gpt.py " + " ".join(argv or sys.argv[1:]),
    }
    log(f"config {res['config']}, {fpt / 1e6:.2f} MFLOP/token (train), load {load_avg():.1f}")

    log("== matmul peaks (GFLOP/s) ==")
    res["matmul"] = matmul_peaks(reps=3 if args.quick else 10, rounds=1 if args.quick else 3)
    for s, r in res["matmul"]["gflops_by_shape"].items():
        log(f"  {s:>16}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()))

    log("== training throughput (tokens/s, interleaved rounds) ==")
    names = [
        "jax_hand",
        "jax_autodiff",
        "jax_hand_bf16",
        "jax_autodiff_bf16",
        "torch_manual",
        "torch_sdpa",
        "torch_manual_1thread",
        "torch_sdpa_1thread",
    ]
    if args.variants:
        names = args.variants.split(",")
    elif not args.no_compile:
        names.append("torch_compile_sdpa")
    res["train"] = measure_interleaved(names, args.rounds, args.steps, log)
    res["load_avg_per_round"] = res["train"].pop("_load_avg_per_round", [])
    peak = res["matmul"]["peak_gflops"]
    fpt_done = model.flops_per_token_computed(cfg, T)
    for n, r in res["train"].items():
        if "tokens_per_s" in r:
            gf = r["tokens_per_s"] * fpt / 1e9
            own = peak["xla_f32"] if n.startswith("jax") else peak["torch_f32"]
            r.update(
                gflops=gf,
                mfu_vs_own_peak=gf / own,
                mfu_vs_xla_f32_peak=gf / peak["xla_f32"],
                mfu_vs_best_peak=gf / max(peak["xla_f32"], peak["torch_f32"]),
                gflops_executed=r["tokens_per_s"] * fpt_done / 1e9,
            )
    res["ratios"] = ratios(res["train"])
    # roofline: every executed FLOP at the measured matmul peak (no elementwise work at all)
    by_shape = res["matmul"]["gflops_by_shape"]
    model_shapes = [k for k in by_shape if not k.startswith("1024")]
    res["roofline"] = {
        "flops_per_token_full_TxT": fpt,
        "flops_per_token_executed": fpt_done,
        "xla_f32_peak_gflops": peak["xla_f32"],
        "xla_f32_at_model_shapes_gflops": max(by_shape[k]["xla_f32"] for k in model_shapes),
        "xla_bf16_peak_gflops": peak["xla_bf16_in_f32_acc"],
        "max_tokens_per_s_f32": peak["xla_f32"] * 1e9 / fpt_done,
        "max_tokens_per_s_f32_model_shapes": max(by_shape[k]["xla_f32"] for k in model_shapes) * 1e9 / fpt_done,
        "max_tokens_per_s_bf16": peak["xla_bf16_in_f32_acc"] * 1e9 / fpt_done,
    }

    if not args.no_breakdown:
        log("== hand engine breakdown (ms per call) ==")
        res["breakdown_ms"] = breakdown(steps=2 if args.quick else 3, rounds=1 if args.quick else 3)
        log("  " + ", ".join(f"{k} {v['ms_median']:.0f}" for k, v in res["breakdown_ms"].items()))

    hand = res["train"].get("jax_hand", {}).get("tokens_per_s")
    sc = None
    if not args.no_scalar:
        log("== scalar engine (tiny config) ==")
        res["scalar"] = sc = scalar_engine(seconds=3 if args.quick else 10)
    if hand and sc:
        sc["hand_speedup_per_token"] = hand / sc["extrapolated_tokens_per_s_at_bench_config"]
        sc["scalar_days_per_million_tokens_at_bench_config"] = (
            1e6 / sc["extrapolated_tokens_per_s_at_bench_config"] / 86400
        )
    if sc:
        log(
            f"  {sc['tokens_per_s']:.1f} tokens/s at {sc['config']}, "
            f"{sc['effective_gflops'] * 1e3:.2f} MFLOP/s -> "
            f"{sc['extrapolated_tokens_per_s_at_bench_config']:.4f} tokens/s at the bench config"
        )

    if not args.no_flags:
        log("== XLA flag / precision variants of jax_hand (separate processes) ==")
        res["xla_flags"] = flag_sweep(repeats=2, rounds=3, steps=args.steps, log=log)

    res["load_avg_end"] = load_avg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, args.out)

    # table
    tr = {n: r for n, r in res["train"].items() if "tokens_per_s" in r}
    best_name = res["ratios"].get("best_torch_f32")
    best_torch = tr[best_name]["tokens_per_s"] if best_name else None
    print(f"\n{'variant':<34}{'tokens/s':>10}{'GFLOP/s':>9}{'MFU(own)':>10}{'vs hand':>9}{'vs best torch f32':>19}")
    for n, r in tr.items():
        vs_hand = r["tokens_per_s"] / hand if hand else float("nan")
        vs_t = r["tokens_per_s"] / best_torch if best_torch else float("nan")
        print(
            f"{n:<34}{r['tokens_per_s']:>10.0f}{r['gflops']:>9.1f}{r['mfu_vs_own_peak']:>10.1%}"
            f"{vs_hand:>9.2f}{vs_t:>19.2f}"
        )
    print(f"best torch (f32 variants): {best_name}")
    for n, row in res["ratios"].items():
        if not isinstance(row, dict):
            continue
        for m, v in row.items():
            if m == "best_torch_f32":
                continue
            print(
                f"  {n} / {m}: median {v['median_ratio']:.2f}, per round "
                + " ".join(f"{x:.2f}" for x in v["per_round"])
            )
    rl = res["roofline"]
    print(
        f"roofline: {rl['flops_per_token_executed'] / 1e6:.2f} MFLOP/token executed "
        f"({rl['flops_per_token_full_TxT'] / 1e6:.2f} full TxT); at XLA f32 peak "
        f"{rl['xla_f32_peak_gflops']:.0f} GFLOP/s -> {rl['max_tokens_per_s_f32']:.0f} tokens/s, "
        f"at model shapes {rl['xla_f32_at_model_shapes_gflops']:.0f} -> "
        f"{rl['max_tokens_per_s_f32_model_shapes']:.0f}; bf16 {rl['xla_bf16_peak_gflops']:.0f} -> "
        f"{rl['max_tokens_per_s_bf16']:.0f}"
    )
    print(f"load average per round: {' '.join(f'{x:.1f}' for x in res['load_avg_per_round'])}")
    if hand and sc:
        print(
            f"{'scalar (extrapolated)':<22}{sc['extrapolated_tokens_per_s_at_bench_config']:>10.4f}"
            f"   hand speed-up per token {sc['hand_speedup_per_token']:.3g}x"
        )
    print(f"matmul peak GFLOP/s: {', '.join(f'{k} {v:.0f}' for k, v in peak.items())}")
    if "xla_flags" in res:
        for k, v in res["xla_flags"].items():
            print(
                f"  {k:<24} {v.get('tokens_per_s', float('nan')):>8.0f} tokens/s "
                f"x{v.get('vs_baseline', float('nan')):.2f}  {v.get('error', '')}"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
