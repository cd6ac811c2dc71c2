"""Mamba-GINR training throughput, JAX (jaxsys.ginr) vs the PyTorch port (experiments/torch_ginr.py),
side by side in one run, plus the memory of the selective-scan variants.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_ginr.py            # fast and balanced
    python experiments/bench_ginr.py --configs fast --rounds 2                # quicker
    python experiments/bench_ginr.py --configs fast --torch-threads 1 --no-memory --no-fused   # as in notes

Each round runs every variant for --steps train steps (batch 32, 512 random pixels per image),
interleaved so machine load hits all variants alike; reports medians of per-step images/s and the
ratio to the faster PyTorch variant (1 or 2 intra-op threads, set per step). JAX variants: the default
(session 3: chunked sequential scan with whole-chunk contractions, encoder on [G, L, R, dim] tokens),
the same with bf16 matmul operands (--matmul-dtype bfloat16; --no-bf16mm skips it),
session 2's default step (its scan, [B, L, dim] encoder with flips; code kept below), optionally the
scan storing all states and the fused-directions BiMamba. Per config a roofline (see `roofline`).
Then one selective scan per variant (forward and gradient, wall and CPU time, the SSD-style blocked
form included as a measured alternative). Memory: XLA's compiled temp-buffer size for the gradient of
one selective scan at the `fast` shapes, and for the whole train step, per scan mode. Writes
runs/bench/ginr.json (or --out).

    flock /tmp/jaxsys-heavy.lock python experiments/bench_ginr.py --configs fast,balanced --rounds 3 \
        --steps 2 --torch-threads 2 --no-fused --no-old-scan --no-session2 --no-scan-bench --no-memory \
        --no-bf16mm --out experiments/results/ginr.json    # the current result (experiments/results/README.md)

Since session 8 the PyTorch port's scan reads its steps with torch.unbind (see torch_ginr.py); before,
its backward was O(L^2) and the port ~10x slower, so ratios to the port in older result files are not
comparable. With the fixed port, 2 torch threads beat 1.
"""

import argparse
import contextlib
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from jaxsys.ginr import data as gd  # noqa: E402
from jaxsys.ginr import mamba as gmb  # noqa: E402
from jaxsys.ginr import model as gm  # noqa: E402
from jaxsys.ginr import scan as gs  # noqa: E402
from jaxsys.ginr import train as gt  # noqa: E402
from jaxsys.train.io import atomic_write_json  # noqa: E402

# ------------------------------------------------------------------ session 2's default, for comparison
# The chunked sequential scan as of session 2 (commit 234f637, jaxsys/ginr/scan.py): every step computes
# exp(delta A) and its four contractions (einsum mat-vecs) and accumulates dA by a per-step reduction.
# Used with the [B, L, dim] encoder (BiMamba with flips) it is session 2's default train step.


def _s2_chunk_states(A_NxD, x0, u, delta, B):
    """States after each step of one chunk (time-major [c, B, N, D]) from the state x0 before it."""

    def step(x, inp):
        u_t, d_t, B_t = inp
        x = jnp.exp(d_t[:, None, :] * A_NxD) * x + B_t[:, :, None] * (d_t * u_t)[:, None, :]
        return x, x

    return lax.scan(step, x0, (u, delta, B))


def _s2_fwd_impl(u, delta, A_NxD, B, C, chunk):
    """y [L, B, D] and the state before every chunk [L / c, B, N, D] (time-major inputs, L % c == 0)."""

    def body(x, inp):
        def step(x, inp):
            u_t, d_t, B_t, C_t = inp
            x = jnp.exp(d_t[:, None, :] * A_NxD) * x + B_t[:, :, None] * (d_t * u_t)[:, None, :]
            return x, jnp.sum(x * C_t[:, :, None], axis=1)

        x_end, y_c = lax.scan(step, x, inp)
        return x_end, (y_c, x)

    x0 = jnp.zeros((u.shape[1], A_NxD.shape[0], u.shape[2]), u.dtype)
    _, (y, x_starts) = lax.scan(body, x0, tuple(gs._chunks(t, chunk) for t in (u, delta, B, C)))
    return y.reshape(u.shape), x_starts


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _s2_ssm_chunked_tm(u, delta, A_NxD, B, C, chunk):
    """Same as _ssm_tm, storing only chunk-start states; the backward recomputes one chunk at a time."""
    return _s2_fwd_impl(u, delta, A_NxD, B, C, chunk)[0]


def _s2_fwd(u, delta, A_NxD, B, C, chunk):
    y, x_starts = _s2_fwd_impl(u, delta, A_NxD, B, C, chunk)
    return y, (u, delta, A_NxD, B, C, x_starts)


def _s2_bwd(chunk, res, dy):
    """The reverse loop of _ssm_tm_bwd, chunk by chunk (last chunk first): recompute the chunk's states
    x_1..x_c from its start state, then run g_t = C_t dy_t + a_{t+1} g_{t+1} backwards over it, carrying
    h = a_{t+1} g_{t+1} and dA across chunks. A step's x_t arrives in the carry (it is the x_{t-1} read
    by the reverse step after it), so the chunk buffer holds only the states before each step."""
    u, delta, A_NxD, B, C, x_starts = res

    def body(carry, inp):
        h, dA = carry
        u_c, d_c, B_c, C_c, dy_c, x_start = inp
        x_end, xs = _s2_chunk_states(A_NxD, x_start, u_c, d_c, B_c)
        x_prev = jnp.concatenate([x_start[None], xs[:-1]], axis=0)

        def step(carry, inp):
            h, dA, x_t = carry
            dy_t, C_t, d_t, u_t, B_t, xp_t = inp
            g = C_t[:, :, None] * dy_t[:, None, :] + h
            a = jnp.exp(d_t[:, None, :] * A_NxD)
            gxa = g * xp_t * a
            # the four contractions as batched mat-vecs: ~15% faster than multiply + sum here
            gB = gs._dot("bnd,bn->bd", g, B_t)
            d_delta = gs._dot("bnd,nd->bd", gxa, A_NxD) + u_t * gB
            dB = gs._dot("bnd,bd->bn", g, d_t * u_t)
            dC = gs._dot("bnd,bd->bn", x_t, dy_t)
            new = (a * g, dA + jnp.sum(gxa * d_t[:, None, :], axis=0), xp_t)
            return new, (d_t * gB, d_delta, dB, dC)

        (h, dA, _), outs = lax.scan(step, (h, dA, x_end), (dy_c, C_c, d_c, u_c, B_c, x_prev), reverse=True)
        return (h, dA), outs

    init = (jnp.zeros(x_starts.shape[1:], u.dtype), jnp.zeros(A_NxD.shape, u.dtype))
    xs_in = tuple(gs._chunks(t, chunk) for t in (u, delta, B, C, dy)) + (x_starts,)
    (_, dA), (du, d_delta, dB, dC) = lax.scan(body, init, xs_in, reverse=True)
    unchunk = lambda t: t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
    return unchunk(du), unchunk(d_delta), dA, unchunk(dB), unchunk(dC)


_s2_ssm_chunked_tm.defvjp(_s2_fwd, _s2_bwd)


@contextlib.contextmanager
def session2_default():
    """While tracing: the session-2 scan in scan_grouped and the [B, L, dim] encoder with flips."""
    old = gs._ssm_chunked_tm, gm.uses_fast_path
    gs._ssm_chunked_tm = lambda u, d, A, B, C, chunk, reverse: _s2_ssm_chunked_tm(u, d, A, B, C, chunk)
    gm.uses_fast_path = lambda cfg: False
    try:
        yield
    finally:
        gs._ssm_chunked_tm, gm.uses_fast_path = old


@contextlib.contextmanager
def no_scan():
    """While tracing: the selective scan replaced by an elementwise stand-in of the same shapes (the
    rest of the step unchanged), to split a step's time into scan and everything else."""
    old = gmb.scan_grouped
    gmb.scan_grouped = lambda u, d, A, B, C, chunk=16, reverse=False: (
        u * d + (B.sum(-1) * C.sum(-1))[..., None] * A[:, 0]
    )
    try:
        yield
    finally:
        gmb.scan_grouped = old


def jax_variant(cfg_name, batch, trace_ctx=None, **overrides):
    """One jitted train step (gt._train_step). trace_ctx: a context manager active while tracing (its
    own jit object, so its compiled step is not shared with other variants)."""
    mc = gm.get_config(cfg_name, **overrides)
    tc = gt.TrainConfig(batch_size=batch)
    state = {"s": gt.init_state(jax.random.PRNGKey(0), mc, tc)}

    def traced(st, b, mc, tc):
        with trace_ctx() if trace_ctx else contextlib.nullcontext():
            return gt._train_step(st, b, mc, tc)

    fn = jax.jit(traced, static_argnames=("mc", "tc"), donate_argnames=("st",)) if trace_ctx else gt.train_step

    def step(b):
        state["s"], m = fn(state["s"], b, mc, tc)
        return float(m["loss"])

    step.compiled = lambda b: fn.lower(state["s"], b, mc, tc).compile()
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
        return torch_ginr.train_step(
            model,
            opt,
            sched,
            torch.from_numpy(b["images"]),
            torch.from_numpy(b["coords"]),
            torch.from_numpy(b["targets"]),
        )

    return step


def ssd_blocked_scan(u, delta, A, B, C, chunk=16):
    """Mamba-2/SSD-style blocked form of the Mamba-1 scan (a measured, rejected alternative; not in the
    library). Inside a chunk, with S_t = cumsum(delta) and m = S_end / 2, x_t = exp(A (S_t - m)) *
    (exp(A m) x_start + sum_{s<=t} exp(-A (S_s - m)) delta_s u_s B_s): the inner sum is one matmul with
    a lower-triangular ones matrix over the chunk's time axis; chunk-start states are carried by a
    short lax.scan. Mamba-1's decay depends on (channel, state), so unlike Mamba-2 the L x L decay mask
    cannot be shared across channels: every term is a full [B, L, N, D] array (several passes through
    memory), and exp(-A (S_s - m)) overflows float32 once |A| * sum(delta over a chunk) > ~170."""
    import jax.numpy as jnp

    Bn, L, Dd = u.shape
    pad = (-L) % chunk
    if pad:
        pf = lambda t: jnp.pad(t, ((0, 0), (0, pad), (0, 0)))
        u, delta, B, C = pf(u), pf(delta), pf(B), pf(C)
    nc = (L + pad) // chunk
    r = lambda t: jnp.transpose(t.reshape(Bn, nc, chunk, t.shape[-1]), (2, 1, 0, 3))  # [c, nc, B, .]
    u_, d_, B_, C_ = r(u), r(delta), r(B), r(C)
    A_ND = A.T
    S = jnp.cumsum(d_, axis=0)
    m = S[-1] * 0.5
    AS = (S - m)[:, :, :, None, :] * A_ND  # [c, nc, B, N, D]
    E = jnp.exp(AS)
    bt = jnp.exp(-AS) * B_[..., None] * (d_ * u_)[:, :, :, None, :]
    T = jnp.tril(jnp.ones((chunk, chunk), u.dtype))
    P = (T @ bt.reshape(chunk, -1)).reshape(bt.shape)
    G = jnp.exp(m[:, :, None, :] * A_ND)

    def body(x0, inp):
        ee, pe, g = inp
        return ee * (g * x0 + pe), g * x0

    _, x0s = jax.lax.scan(body, jnp.zeros((Bn, A.shape[1], Dd), u.dtype), (E[-1], P[-1], G))
    y = jnp.sum(E * (x0s[None] + P) * C_[..., None], axis=3)
    return jnp.transpose(y, (2, 1, 0, 3)).reshape(Bn, nc * chunk, Dd)[:, :L]


SCAN_VARIANTS = {
    "sequential_chunk16 (default)": dict(mode="sequential", chunk=16),
    "session-2 sequential_chunk16": dict(mode="sequential", chunk=16, s2=True),
    "sequential_chunk16_one_group": dict(mode="sequential", chunk=16, groups=1),
    "sequential (stores all states)": dict(mode="sequential"),
    "associative": dict(mode="associative"),
    "associative_chunk16": dict(mode="associative", chunk=16),
    "ssd_blocked16 (rejected)": dict(ssd=16),
}


def _scan_fn(kw):

    kw = dict(kw)
    if "ssd" in kw:
        return lambda u, dl, A, Bm, Cm: ssd_blocked_scan(u, dl, A, Bm, Cm, kw["ssd"])
    if kw.pop("s2", False):

        def s2(u, dl, A, Bm, Cm):
            with session2_default():
                return gs.selective_scan(u, dl, A, Bm, Cm, **kw)

        return s2
    if "groups" in kw:  # the chunked sequential scan without batch groups
        g, c = kw.pop("groups"), kw["chunk"]
        return lambda u, dl, A, Bm, Cm: gs._scan_sequential_chunked(u, dl, A, Bm, Cm, c, groups=g)
    return lambda u, dl, A, Bm, Cm: gs.selective_scan(u, dl, A, Bm, Cm, **kw)


def _scan_inputs(B, L, D, N):
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    u = jax.random.normal(k[0], (B, L, D))
    dl = jax.nn.softplus(jax.random.normal(k[1], (B, L, D)) - 3)
    A = -jax.numpy.tile(jax.numpy.arange(1.0, N + 1), (D, 1))
    Bm, Cm = jax.random.normal(k[2], (B, L, N)), jax.random.normal(k[3], (B, L, N))
    w = jax.random.normal(k[4], (B, L, D))
    return (u, dl, A, Bm, Cm), w


PARALLEL_SCAN_VARIANTS = ("associative", "associative_chunk16", "ssd_blocked16 (rejected)")


def scan_speed(shapes, rounds=7, parallel=False):
    """Forward and forward+backward (jax.grad wrt u, delta, A, B, C) of one selective scan per variant,
    interleaved; median wall ms, median process CPU ms (robust to other load), max |difference| to the
    stored-states sequential scan, and XLA's compiled temp memory of the gradient."""
    out = {}
    for name_shape, (B, L, D, N) in shapes.items():
        args, w = _scan_inputs(B, L, D, N)
        # the parallel-scan variants (0.3-1.2 GB temp each) slowed the small sequential ones timed between
        # them (session 3: fast default 46 ms beside them vs 28-30 ms without), so they are opt-in
        fns = {n: _scan_fn(kw) for n, kw in SCAN_VARIANTS.items() if parallel or n not in PARALLEL_SCAN_VARIANTS}
        fwd = {n: jax.jit(f) for n, f in fns.items()}
        grd = {
            n: jax.jit(jax.grad(lambda *a, f=f: jax.numpy.sum(w * f(*a)), argnums=(0, 1, 2, 3, 4)))
            for n, f in fns.items()
        }
        ref_y, ref_g = fwd["sequential (stores all states)"](*args), grd["sequential (stores all states)"](*args)
        res = {}
        for n in fns:
            y, g = fwd[n](*args), grd[n](*args)
            mem = grd[n].lower(*args).compile().memory_analysis().temp_size_in_bytes
            res[n] = {
                "max_abs_diff_y": float(abs(y - ref_y).max()),
                "max_rel_diff_grad": max(float(abs(a - b).max() / abs(b).max()) for a, b in zip(g, ref_g)),
                "grad_temp_mib": round(mem / 2**20, 1),
                "fwd_ms": [],
                "grad_ms": [],
                "grad_cpu_ms": [],
            }
        for _ in range(rounds):
            for n in fns:
                t0 = time.perf_counter()
                jax.block_until_ready(fwd[n](*args))
                res[n]["fwd_ms"].append(1e3 * (time.perf_counter() - t0))
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(grd[n](*args))
                res[n]["grad_ms"].append(1e3 * (time.perf_counter() - t0))
                res[n]["grad_cpu_ms"].append(1e3 * (time.process_time() - c0))
        base = float(np.median(res["sequential (stores all states)"]["grad_cpu_ms"]))
        for n, r in res.items():
            for k in ("fwd_ms", "grad_ms", "grad_cpu_ms"):
                r[k] = round(float(np.median(r[k])), 1)
            r["grad_cpu_speedup_vs_stored_states"] = round(base / r["grad_cpu_ms"], 2)
        out[f"{name_shape} B={B} L={L} D={D} N={N}"] = res
        print(f"scan [{name_shape}] done", flush=True)
    return out


def scan_memory(B=32, L=80, D=512, N=16):
    """Compiled temp bytes of grad(sum(selective_scan)) per mode (D = 2 * d_inner: both directions)."""
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    u = jax.random.normal(k[0], (B, L, D))
    dl = jax.nn.softplus(jax.random.normal(k[1], (B, L, D)) - 3)
    A = -jax.numpy.tile(jax.numpy.arange(1.0, N + 1), (D, 1))
    Bm, Cm = jax.random.normal(k[2], (B, L, N)), jax.random.normal(k[3], (B, L, N))
    out = {}
    for name, kw in {
        "associative": dict(mode="associative"),
        "sequential": dict(mode="sequential"),
        "sequential+checkpoint": dict(mode="sequential", checkpoint=True),
        "sequential_chunk16 (default)": dict(mode="sequential", chunk=16),
        "chunked16": dict(mode="associative", chunk=16),
        "chunked16+checkpoint": dict(mode="associative", chunk=16, checkpoint=True),
    }.items():
        g = jax.jit(
            jax.grad(lambda u, dl, Bm, Cm, kw=kw: gs.selective_scan(u, dl, A, Bm, Cm, **kw).sum(), argnums=(0, 1, 2, 3))
        )
        ma = g.lower(u, dl, Bm, Cm).compile().memory_analysis()
        out[name] = {"temp_mib": round(ma.temp_size_in_bytes / 2**20, 1)}
    return out


def step_memory(cfg_name, batch, mode, chunk=0):
    mc = gm.get_config(cfg_name, scan_mode=mode, scan_chunk=chunk)
    tc = gt.TrainConfig(batch_size=batch)
    st = gt.init_state(jax.random.PRNGKey(0), mc, tc)
    b = gd.make_batch(np.zeros((batch, 32, 32, 3), np.uint8), np.arange(batch), 512, np.random.default_rng(0))
    ma = gt.train_step.lower(st, b, mc, tc).compile().memory_analysis()
    return round(ma.temp_size_in_bytes / 2**20, 1)


def _median_ms(f, *args, n=7):
    jax.block_until_ready(f(*args))
    w, c = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*args))
        w.append(time.perf_counter() - t0)
        c.append(time.process_time() - c0)
    return 1e3 * float(np.median(w)), 1e3 * float(np.median(c))


def roofline(cfg_name, batch, batches, rounds=3):
    """What bounds a train step on this machine: the step vs the same step with the scan replaced by an
    elementwise stand-in (interleaved, medians), XLA's FLOP count of the step without scan loops
    (compiled.cost_analysis(): the matmuls plus elementwise ops outside loops), XLA's measured matmul
    rate on the model's main shapes (forward, input gradient, weight gradient), and one scan
    forward+gradient at the model's shape. floor = flops / matmul rate + scans * scan time, i.e. the
    step if everything but matmuls and scans were free and nothing overlapped."""
    mc = gm.get_config(cfg_name)
    full, nos = jax_variant(cfg_name, batch), jax_variant(cfg_name, batch, trace_ctx=no_scan)
    flops = nos.compiled(batches[0]).cost_analysis()
    flops = float((flops if isinstance(flops, dict) else flops[0])["flops"])
    for f in (full, nos):
        f(batches[0])
    t = {"step": [], "step_without_scan": []}
    c = {k: [] for k in t}
    for r in range(rounds):
        for k, f in (("step", full), ("step_without_scan", nos)):
            for i in range(2):
                t0, c0 = time.perf_counter(), time.process_time()
                f(batches[(2 * r + i) % len(batches)])
                t[k].append(time.perf_counter() - t0)
                c[k].append(time.process_time() - c0)
    M, D, DI = batch * (mc.num_patches + mc.num_lp), mc.dim, mc.expand * mc.dim
    x = jax.random.normal(jax.random.PRNGKey(0), (M, D))
    w = jax.random.normal(jax.random.PRNGKey(1), (2 * DI, D)) * 0.05
    dy = jax.random.normal(jax.random.PRNGKey(2), (M, 2 * DI))
    dots = {
        "forward x W^T": _median_ms(jax.jit(lambda x, w: x @ w.T), x, w)[0],
        "input grad dy W": _median_ms(jax.jit(lambda dy, w: dy @ w), dy, w)[0],
        "weight grad dy^T x": _median_ms(jax.jit(lambda dy, x: dy.T @ x), dy, x)[0],
    }
    fl = 2 * M * D * 2 * DI
    rate = 3 * fl / sum(dots.values()) / 1e6  # GFLOP/s over the three forms together
    (u, dl, A, Bm, Cm), wy = _scan_inputs(batch, mc.num_patches + mc.num_lp, DI, mc.d_state)
    g = jax.jit(
        jax.grad(lambda *a: jnp.sum(wy * gs.selective_scan(*a, mode="sequential", chunk=16)), argnums=(0, 1, 2, 3, 4))
    )
    scan_ms, scan_cpu_ms = _median_ms(g, u, dl, A, Bm, Cm)
    n_scans = 2 * mc.depth
    step_s = float(np.median(t["step"]))
    floor_s = flops / (rate * 1e9) + n_scans * scan_ms / 1e3
    out = {
        "step_s": round(step_s, 4),
        "step_cpu_s": round(float(np.median(c["step"])), 4),
        "step_without_scan_s": round(float(np.median(t["step_without_scan"])), 4),
        "step_without_scan_cpu_s": round(float(np.median(c["step_without_scan"])), 4),
        "gflop_step_without_scan_loops": round(flops / 1e9, 2),
        "matmul_ms": {k: round(v, 2) for k, v in dots.items()},
        "matmul_shape": f"[{M}, {D}] x [{D}, {2 * DI}]",
        "matmul_gflops": round(rate, 1),
        "scan_grad_ms": round(scan_ms, 1),
        "scan_grad_cpu_ms": round(scan_cpu_ms, 1),
        "scans_per_step": n_scans,
        "floor_s": round(floor_s, 4),
        "max_images_per_s": round(batch / floor_s, 1),
        "images_per_s": round(batch / step_s, 1),
    }
    print(f"[{cfg_name}] roofline: {out}", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="fast,balanced")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--coords", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="train steps per variant per round")
    ap.add_argument(
        "--torch-threads",
        default="1,2",
        help="PyTorch variants to time, one per intra-op thread count; the ratio is vs the best",
    )
    ap.add_argument("--no-fused", action="store_true", help="skip the fused-directions JAX variant")
    ap.add_argument(
        "--no-bf16mm",
        action="store_true",
        help="skip the JAX variant with bfloat16 matmul operands (--matmul-dtype bfloat16)",
    )
    ap.add_argument(
        "--no-session2",
        action="store_true",
        help="skip the JAX variant with session 2's default step (its scan, [B, L, dim] encoder)",
    )
    ap.add_argument(
        "--torch-steps", type=int, default=0, help="steps per round of the PyTorch variants (default: --steps)"
    )
    ap.add_argument("--no-roofline", action="store_true", help="skip the roofline numbers per config")
    ap.add_argument("--no-memory", action="store_true", help="skip the compiled-memory measurements")
    ap.add_argument("--assoc", action="store_true", help="also time the associative-scan JAX model")
    ap.add_argument(
        "--no-old-scan",
        action="store_true",
        help="skip the JAX variant with the previous default scan (sequential, all states stored)",
    )
    ap.add_argument("--no-scan-bench", action="store_true", help="skip the per-scan variant timings")
    ap.add_argument("--scan-rounds", type=int, default=7)
    ap.add_argument(
        "--scan-parallel",
        action="store_true",
        help="also time the associative / SSD-style scans (memory-heavy; they slow the others)",
    )
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "ginr.json"))
    a = ap.parse_args(argv)
    import torch

    x, _ = gd.load_png20()
    x = np.concatenate([x] * ((a.batch + len(x) - 1) // len(x)))
    rng = np.random.default_rng(0)
    batches = [gd.make_batch(x, np.arange(a.batch), a.coords, rng) for _ in range(4)]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}",
        "load_avg_at_start": os.getloadavg(),
        "batch": a.batch,
        "coords": a.coords,
        "rounds": a.rounds,
        "steps_per_round": a.steps,
        "throughput": {},
        "memory": {},
    }
    for cfg in a.configs.split(","):
        variants = {"jax_default": jax_variant(cfg, a.batch)}  # sequential scan, chunk 16, unfused
        if not a.no_bf16mm:  # the same with the weight matmuls on bf16 operands (f32 accumulation)
            variants["jax_bf16_matmuls"] = jax_variant(cfg, a.batch, matmul_dtype="bfloat16")
        if not a.no_session2:
            variants["jax_session2_default"] = jax_variant(cfg, a.batch, trace_ctx=session2_default)
        if not a.no_old_scan:
            variants["jax_seq_stored_states"] = jax_variant(cfg, a.batch, scan_mode="sequential", scan_chunk=0)
        if not a.no_fused:
            variants["jax_default_fused"] = jax_variant(cfg, a.batch, fuse_directions=True)
        if a.assoc:
            variants["jax_associative"] = jax_variant(cfg, a.batch, scan_mode="associative", scan_chunk=0)
        for nt in filter(None, a.torch_threads.split(",")):
            variants[f"torch_{nt}thread"] = torch_variant(cfg, int(nt))
        compile_s = {}
        for n, f in variants.items():
            t0 = time.perf_counter()
            f(batches[0])
            compile_s[n] = round(time.perf_counter() - t0, 1)
            print(f"[{cfg}] {n}: first step (compile/warm-up) {compile_s[n]}s", flush=True)
        times = {n: [] for n in variants}
        cpu = {n: [] for n in variants}
        for r in range(a.rounds):
            for n, f in variants.items():
                for s in range(a.torch_steps if (n.startswith("torch") and a.torch_steps) else a.steps):
                    t0, c0 = time.perf_counter(), time.process_time()
                    f(batches[(r * a.steps + s) % len(batches)])
                    times[n].append(time.perf_counter() - t0)
                    cpu[n].append(time.process_time() - c0)
            print(
                f"[{cfg}] round {r + 1}/{a.rounds}: "
                + ", ".join(f"{n} {a.batch / np.median(t):.1f} img/s" for n, t in times.items()),
                flush=True,
            )
        base = max([a.batch / np.median(t) for n, t in times.items() if n.startswith("torch")] or [float("nan")])
        results["throughput"][cfg] = {
            n: {
                "images_per_s": round(a.batch / float(np.median(t)), 2),
                "step_s_median": round(float(np.median(t)), 4),
                "first_step_s": compile_s[n],
                "step_cpu_s_median": round(float(np.median(cpu[n])), 4),
                "steps_timed": len(t),
                "ratio_vs_torch": round(a.batch / float(np.median(t)) / base, 2),
            }
            for n, t in times.items()
        }
        if not a.no_roofline:
            results.setdefault("roofline", {})[cfg] = roofline(cfg, a.batch, batches)
    if not a.no_scan_bench:
        results["scan_speed"] = scan_speed(
            {"fast": (a.batch, 80, 256, 16), "balanced": (a.batch, 96, 512, 16)}, a.scan_rounds, a.scan_parallel
        )
    results["load_avg_at_end"] = os.getloadavg()
    if not a.no_memory:
        print("memory ...", flush=True)
        results["memory"]["scan_grad_fast_shapes"] = scan_memory()
        results["memory"]["train_step_fast_temp_mib"] = {
            "sequential_chunk16 (default)": step_memory("fast", a.batch, "sequential", 16),
            "sequential": step_memory("fast", a.batch, "sequential"),
            "associative": step_memory("fast", a.batch, "associative"),
        }
    print(f"\n{'config':<9} {'variant':<24} {'img/s':>8} {'cpu s/step':>10} {'x torch':>8} {'first step s':>12}")
    for cfg, d in results["throughput"].items():
        for n, r in d.items():
            print(
                f"{cfg:<9} {n:<24} {r['images_per_s']:>8.1f} {r['step_cpu_s_median']:>10.3f} "
                f"{r['ratio_vs_torch']:>8.2f} {r['first_step_s']:>12}"
            )
    for cfg, r in results.get("roofline", {}).items():
        print(
            f"roofline [{cfg}]: step {r['step_s']} s ({r['images_per_s']} img/s), without scan "
            f"{r['step_without_scan_s']} s; {r['gflop_step_without_scan_loops']} GFLOP at {r['matmul_gflops']} "
            f"GFLOP/s + {r['scans_per_step']} scans x {r['scan_grad_ms']} ms -> floor {r['floor_s']} s = "
            f"{r['max_images_per_s']} img/s"
        )
    for shp, res in results.get("scan_speed", {}).items():
        print(f"\none selective scan, {shp} (jax.grad of sum(w * y)); cpu ms = process CPU time")
        print(
            f"  {'variant':<32} {'fwd ms':>8} {'grad ms':>8} {'grad cpu':>9} {'speedup':>8} {'temp MiB':>9} {'|dy|':>9}"
        )
        for n, r in res.items():
            print(
                f"  {n:<32} {r['fwd_ms']:>8.1f} {r['grad_ms']:>8.1f} {r['grad_cpu_ms']:>9.1f} "
                f"{r['grad_cpu_speedup_vs_stored_states']:>8.2f} {r['grad_temp_mib']:>9.1f} {r['max_abs_diff_y']:>9.1e}"
            )
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
