"""`jaxsys ginr profile`: where the time goes. Times the encoder (patch embed + BiMamba stack), the
modulation (per-query cross-attention) and the hyponet separately, forward and forward+backward,
plus the whole jitted train step and each compile; optionally writes a jax.profiler trace."""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.ginr import data as gdata
from jaxsys.ginr import model as gm
from jaxsys.ginr import train as gt


def _time(f, *args, repeats: int):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    med = float(np.median(ts))
    return {"compile_s": round(max(first - med, 0.0), 3), "median_s": round(med, 5)}


def profile(
    mc: gm.GinrConfig,
    batch_size: int = 32,
    num_coords: int = 512,
    repeats: int = 5,
    trace_dir: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Timings (seconds) of each part; 'share_fwd' is the part's share of the summed forward times."""
    tc = gt.TrainConfig(batch_size=batch_size, num_sample_coords=num_coords).step_config()
    rng = np.random.default_rng(seed)
    imgs_u8 = rng.integers(0, 256, (batch_size, mc.image_size, mc.image_size, mc.channels), np.uint8)
    b = gdata.make_batch(imgs_u8, np.arange(batch_size), num_coords, rng)
    state = gt.init_state(jax.random.key(seed), mc, tc)
    p = jax.tree_util.tree_map(jnp.copy, state.params)  # (the train step below donates the state)
    x, c = jnp.asarray(b["images"]), jnp.asarray(b["coords"])
    lp = jax.jit(gm.encode, static_argnums=2)(p, x, mc)
    mod = jax.jit(gm.modulate, static_argnums=3)(p, lp, c, mc)
    parts = {
        "encoder": (lambda p, x, lp, c, mod: gm.encode(p, x, mc)),
        "modulation": (lambda p, x, lp, c, mod: gm.modulate(p, lp, c, mc)),
        "hyponet": (lambda p, x, lp, c, mod: gm.hyponet(p, c, mod, mc)),
    }
    out: dict = {
        "config": {
            "dim": mc.dim,
            "num_lp": mc.num_lp,
            "depth": mc.depth,
            "hidden": mc.hidden,
            "scan_mode": mc.scan_mode,
            "matmul_dtype": mc.matmul_dtype,
        },
        "batch_size": batch_size,
        "num_coords": num_coords,
        "num_params": gm.num_params(p),
        "parts": {},
    }
    args = (p, x, lp, c, mod)
    for name, f in parts.items():
        fwd = jax.jit(f)
        # forward+backward: gradient of a scalar of the part's output wrt params and its float inputs
        fb = jax.jit(jax.grad(lambda p, x, lp, c, mod, f=f: jnp.sum(f(p, x, lp, c, mod)), argnums=(0, 2, 4)))
        out["parts"][name] = {"fwd": _time(fwd, *args, repeats=repeats), "fwd_bwd": _time(fb, *args, repeats=repeats)}
    tot = sum(v["fwd"]["median_s"] for v in out["parts"].values())
    totb = sum(v["fwd_bwd"]["median_s"] for v in out["parts"].values())
    for v in out["parts"].values():
        v["share_fwd"] = round(v["fwd"]["median_s"] / tot, 3)
        v["share_fwd_bwd"] = round(v["fwd_bwd"]["median_s"] / totb, 3)
    t0 = time.perf_counter()
    state, m = gt.train_step(state, b, mc, tc)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = gt.train_step(state, b, mc, tc)
        jax.block_until_ready(m)
        ts.append(time.perf_counter() - t0)
    med = float(np.median(ts))
    out["train_step"] = {
        "compile_s": round(first - med, 3),
        "median_s": round(med, 5),
        "images_per_s": round(batch_size / med, 2),
    }
    if trace_dir is not None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        with jax.profiler.trace(str(trace_dir)):
            for _ in range(2):
                state, m = gt.train_step(state, b, mc, tc)
                jax.block_until_ready(m)
        out["trace_dir"] = str(trace_dir)
    return out


def format_profile(r: dict) -> str:
    lines = [
        f"Mamba-GINR {r['config']} params={r['num_params']} batch={r['batch_size']} coords={r['num_coords']}",
        f"{'part':<11} {'fwd ms':>9} {'share':>6} {'fwd+bwd ms':>11} {'share':>6} {'compile s':>10}",
    ]
    for n, v in r["parts"].items():
        lines.append(
            f"{n:<11} {1e3 * v['fwd']['median_s']:>9.2f} {v['share_fwd']:>6.1%} "
            f"{1e3 * v['fwd_bwd']['median_s']:>11.2f} {v['share_fwd_bwd']:>6.1%} "
            f"{v['fwd']['compile_s'] + v['fwd_bwd']['compile_s']:>10.2f}"
        )
    t = r["train_step"]
    lines.append(
        f"train step: {1e3 * t['median_s']:.1f} ms ({t['images_per_s']} images/s), compile {t['compile_s']:.1f} s"
    )
    if "trace_dir" in r:
        lines.append(f"trace written to {r['trace_dir']} (open with TensorBoard / Perfetto)")
    return "\n".join(lines)
