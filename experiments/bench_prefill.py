"""Prompt prefill vs token-by-token prompt feeding in jaxsys.gpt.generate.generate_batch, side by side.

One prompt of each length, greedy, 4 new tokens, a random 128/4/6/512 model in float32; the two modes
alternate in every round (order flipped each round) and the medians of --rounds rounds are reported
with their ratio; both modes must generate the same tokens.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_prefill.py --out experiments/results/prefill.json
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxsys.gpt import generate as G  # noqa: E402
from jaxsys.gpt import model  # noqa: E402
from jaxsys.gpt.config import GPTConfig  # noqa: E402
from jaxsys.train.io import atomic_write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="16,100,400")
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "prefill.json"))
    a = ap.parse_args(argv)
    cfg = GPTConfig(vocab_size=68, n_embd=128, n_head=4, n_layer=6, block_size=512)
    params = {k: np.asarray(v) for k, v in model.init_params(jax.random.PRNGKey(0), cfg).items()}
    rng = np.random.default_rng(0)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python " + " ".join(sys.argv),
        "model": "128/4/6/512 float32",
        "new_tokens": a.new_tokens,
        "rounds": a.rounds,
        "lengths": {},
    }
    for n in (int(x) for x in a.lengths.split(",")):
        prompt = list(rng.integers(0, cfg.vocab_size - 1, n))
        run = {
            mode: (
                lambda m=mode: (
                    G.generate_batch(params, cfg, [prompt], a.new_tokens, greedy=True, prefill=m == "prefill")[0].tokens
                )
            )
            for mode in ("prefill", "token_by_token")
        }
        toks = {mode: f() for mode, f in run.items()}  # compiles
        times = {mode: [] for mode in run}
        for r in range(a.rounds):
            for mode in list(run) if r % 2 == 0 else list(run)[::-1]:
                t0 = time.perf_counter()
                run[mode]()
                times[mode].append((time.perf_counter() - t0) * 1e3)
        med = {mode: float(np.median(t)) for mode, t in times.items()}
        out["lengths"][str(n)] = {
            "median_ms": {k: round(v, 2) for k, v in med.items()},
            "token_by_token_over_prefill": round(med["token_by_token"] / med["prefill"], 2),
            "same_tokens": toks["prefill"] == toks["token_by_token"],
            "ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
        }
        print(
            f"prompt {n:4d}: prefill {med['prefill']:7.1f} ms, token by token {med['token_by_token']:7.1f} ms "
            f"({med['token_by_token'] / med['prefill']:.2f}x), same tokens {toks['prefill'] == toks['token_by_token']}",
            flush=True,
        )
    atomic_write_json(a.out, out)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
