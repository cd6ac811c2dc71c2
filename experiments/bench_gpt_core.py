"""Engine-level timings for jaxsys.gpt.model: hand-derived backward vs jax.grad, and the attention
variants (full T x T vs causal query blocks), float32, B=4, T=512, E=128, H=4, L=6.

Interleaved rounds; reports the median wall time and the median process CPU time (all threads),
which is steadier than wall time on a shared machine. Writes runs/bench/gpt_core.json (or --out).

    flock /tmp/jaxsys-heavy.lock python experiments/bench_gpt_core.py --rounds 5
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.gpt import model
from jaxsys.gpt.config import GPTConfig


def _step(mode: str, q_block):
    def hand(params, tokens, targets, mask):
        logits, cache = model.forward(params, tokens, CFG, q_block=q_block)
        loss, xc = model.cross_entropy_forward(logits, targets, mask)
        return loss, model.backward(params, cache, model.cross_entropy_backward(xc))

    def autodiff(params, tokens, targets, mask):
        def lf(p):
            logits, _ = model.forward(p, tokens, CFG, q_block=q_block)
            return model.cross_entropy_forward(logits, targets, mask)[0]

        return jax.value_and_grad(lf)(params)

    return jax.jit(hand if mode == "hand" else autodiff)


CFG = GPTConfig(vocab_size=65, n_embd=128, n_head=4, n_layer=6, block_size=512)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default="runs/bench/gpt_core.json")
    args = ap.parse_args()
    b, t = args.batch, CFG.block_size
    params = model.init_params(jax.random.PRNGKey(0), CFG)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (b, t), 0, CFG.vocab_size)
    targets = jnp.roll(tokens, -1, axis=1)
    mask = jnp.ones((b, t), jnp.float32)
    variants = {f"{m}_q{qb or 'full'}": _step(m, qb) for m in ("hand", "autodiff") for qb in (128, 64, None)}
    for f in variants.values():
        jax.block_until_ready(f(params, tokens, targets, mask))
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, f in variants.items():
            w0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(params, tokens, targets, mask))
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    ref = np.median(cpu["autodiff_q128"])
    fpt = model.flops_per_token(CFG, t)
    rows = {}
    print(f"{'variant':16s} {'wall ms':>8s} {'tok/s':>7s} {'cpu ms':>7s} {'cpu vs autodiff_q128':>21s} {'GFLOP/s':>8s}")
    for k in variants:
        w, c = float(np.median(wall[k])), float(np.median(cpu[k]))
        rows[k] = {
            "wall_s": w,
            "cpu_s": c,
            "tokens_per_s": b * t / w,
            "cpu_ratio": ref / c,
            "gflops_wall": fpt * b * t / w / 1e9,
        }
        print(f"{k:16s} {w * 1e3:8.1f} {b * t / w:7.0f} {c * 1e3:7.1f} {ref / c:21.2f} {rows[k]['gflops_wall']:8.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"config": CFG.to_dict(), "batch": b, "rounds": args.rounds, "flops_per_token": fpt, "variants": rows},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
