"""Adam update pass alone on the MLP 784-512-512-10 params (float32): hand Adam vs optax.adam vs a
plain p + c*g pass (2 reads, 1 write), 20 updates per call, 7 interleaved rounds, medians in us/update.

    python experiments/bench_adam_pass.py [OUT.json]   (default runs/bench/adam_pass.json)
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsys.nn.optim import adam

shapes = [(512, 784), (512,), (512, 512), (512,), (10, 512), (10,)]
key = jax.random.PRNGKey(0)
params = [jax.random.normal(jax.random.fold_in(key, i), s) for i, s in enumerate(shapes)]
grads = [jax.random.normal(jax.random.fold_in(key, 100 + i), s) * 1e-2 for i, s in enumerate(shapes)]
K = 20


def make(opt):
    def run(p, s, g):
        def body(c, _):
            p, s = c
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(body, (p, s), None, length=K)
        return p, s

    return jax.jit(run, donate_argnums=(0, 1))


def add_only():
    def run(p, g):
        def body(p, _):
            return jax.tree_util.tree_map(lambda a, b: a + 1e-3 * b, p, g), None

        p, _ = jax.lax.scan(body, p, None, length=K)
        return p

    return jax.jit(run, donate_argnums=(0,))


variants = {"hand": adam(1e-3), "optax": optax.adam(1e-3)}
fns = {k: make(v) for k, v in variants.items()}
states = {k: (jax.tree_util.tree_map(jnp.copy, params), v.init(params)) for k, v in variants.items()}
ao = add_only()
pa = jax.tree_util.tree_map(jnp.copy, params)
res = {k: [] for k in list(fns) + ["p+g"]}
for r in range(7):
    for k, f in fns.items():
        p, s = states[k]
        p, s = f(p, s, grads)
        jax.block_until_ready(p)
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < 0.3:
            p, s = f(p, s, grads)
            n += 1
        jax.block_until_ready(p)
        res[k].append((time.perf_counter() - t) / n / K * 1e6)
        states[k] = (p, s)
    pa = ao(pa, grads)
    jax.block_until_ready(pa)
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < 0.3:
        pa = ao(pa, grads)
        n += 1
    jax.block_until_ready(pa)
    res["p+g"].append((time.perf_counter() - t) / n / K * 1e6)
for k, v in res.items():
    print(k, "median us/update", round(float(np.median(v)), 1), [round(x) for x in v])
import json
import os

out = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.path.join(os.path.dirname(__file__), "..", "runs", "bench", "adam_pass.json")
)
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out + ".tmp", "w") as f:
    json.dump({k: {"median_us": float(np.median(v)), "rounds_us": v} for k, v in res.items()}, f, indent=1)
os.replace(out + ".tmp", out)
print("wrote", out)
