"""Memorised-chat demo: the fraction of training prompts that a chat model answers (greedy) with one
of their training responses, through the jitted batched generator, the float64 numpy inference
model, and the HTTP API (/microgpt/v1/chat on a loopback server).

    python -m jaxsys.cli gpt train --data chat --chat-categories greetings,conversations \
        --val-fraction 0 ... --run-dir runs/chat-memo
    python experiments/serve_chat_memo.py --model runs/chat-memo

Writes runs/bench/serve_chat_memo.json (or --out).
"""

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_pairs(path: Path, categories: set[str]) -> dict[str, set[str]]:
    pairs: dict[str, set[str]] = defaultdict(set)
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) == 3 and row[0].strip() in categories:
                pairs[row[1]].add(row[2])
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chatterbot_english_pairs.tsv"))
    ap.add_argument("--categories", default="greetings,conversations")
    ap.add_argument("--http-sample", type=int, default=1000, help="prompts also asked over HTTP")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "serve_chat_memo.json"))
    a = ap.parse_args()

    import httpx

    from jaxsys.gpt.chat import build_chat_prompt, chat_stop_ids
    from jaxsys.gpt.generate import generate_batch, room
    from jaxsys.gpt.inference import InferenceModel
    from jaxsys.gpt.serve import ServeConfig, ServerThread, create_app
    from jaxsys.gpt.weights_io import load_model
    from jaxsys.train.io import atomic_write_json

    params, cfg, tok = load_model(a.model)
    pairs = load_pairs(Path(a.data), {c.strip() for c in a.categories.split(",")})
    prompts = sorted(pairs)
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    ids = [build_chat_prompt(tok, m, cfg.block_size).ids for m in msgs]
    stop = chat_stop_ids(tok)
    t0 = time.perf_counter()
    gens = generate_batch(params, cfg, ids, cfg.block_size, greedy=True, stop_ids=stop)
    jax_s = time.perf_counter() - t0
    jax_replies = [tok.decode(g.tokens) for g in gens]
    ref = InferenceModel(params, cfg, tok)
    np_replies = [tok.decode(ref.generate_from_prompt(i, room(cfg, len(i)), greedy=True, stop_ids=stop)) for i in ids]
    hits_jax = [r in pairs[p] for p, r in zip(prompts, jax_replies)]
    hits_np = [r in pairs[p] for p, r in zip(prompts, np_replies)]
    scfg = ServeConfig(max_batch=16)
    with ServerThread(create_app(params, cfg, tok, scfg)) as srv:
        http_hits = []
        for p, m in list(zip(prompts, msgs))[: a.http_sample]:
            r = httpx.post(srv.url + "/microgpt/v1/chat", json={"messages": m, "temperature": 0}, timeout=120).json()
            http_hits.append(r["content"] in pairs[p])
    misses = [
        {"prompt": p, "reply": r, "expected": sorted(pairs[p])}
        for p, r, h in zip(prompts, jax_replies, hits_jax)
        if not h
    ]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "model": a.model,
        "categories": a.categories,
        "n_prompts": len(prompts),
        "n_pairs": sum(len(v) for v in pairs.values()),
        "fraction_memorised_jax_greedy": sum(hits_jax) / len(prompts),
        "fraction_memorised_numpy_greedy": sum(hits_np) / len(prompts),
        "jax_numpy_reply_agreement": sum(x == y for x, y in zip(jax_replies, np_replies)) / len(prompts),
        "http_sample": len(http_hits),
        "http_fraction_memorised": sum(http_hits) / len(http_hits),
        "jax_batched_generate_s": jax_s,
        "misses": misses,
        "examples": [{"prompt": p, "reply": r} for p, r in zip(prompts[:8], jax_replies[:8])],
    }
    atomic_write_json(a.out, res)
    print(
        f"{len(prompts)} training prompts: memorised {res['fraction_memorised_jax_greedy']:.3f} "
        f"(jax greedy), {res['fraction_memorised_numpy_greedy']:.3f} (numpy float64), HTTP "
        f"{res['http_fraction_memorised']:.3f} of {len(http_hits)}; jax/numpy agreement "
        f"{res['jax_numpy_reply_agreement']:.3f}"
    )
    for m in misses[:5]:
        print(f"  miss: {m['prompt']!r} -> {m['reply']!r}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
