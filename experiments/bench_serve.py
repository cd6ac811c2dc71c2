"""Serving benchmark: HTTP load test at 1, 8 and 32 concurrent clients, and decode tokens/s of the
jitted KV-cache generator vs the float64 numpy inference model vs PyTorch (KV cache), same model.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_serve.py [--model DIR]

Without --model a random chat model of the chat-capable size (n_embd 128, n_head 4, n_layer 6,
block_size 512) is used, so every request generates exactly max_tokens tokens. The server runs as a
separate process (`jaxsys gpt serve`, loopback only); the load generator is asyncio + httpx here.
Concurrency levels are interleaved over rounds; medians are reported. Writes
runs/bench/serve.json (or --out).
"""

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))


def random_chat_model(out_dir: Path, n_embd=128, n_head=4, n_layer=6, block_size=512, seed=0):
    import jax

    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.model import init_params
    from jaxsys.gpt.tokenizer import Tokenizer
    from jaxsys.gpt.weights_io import save_model

    text = ROOT.parent / "shared" / "data" / "chatterbot_english_pairs.tsv"
    corpus = text.read_text("utf-8") if text.exists() else "abcdefghijklmnopqrstuvwxyz .,?!'"
    tok = Tokenizer.from_corpus(corpus.replace("\t", "").replace("\n", ""), chat=True)
    cfg = GPTConfig(tok.vocab_size, n_embd, n_head, n_layer, block_size)
    params = init_params(jax.random.PRNGKey(seed), cfg)
    save_model(out_dir, {k: np.asarray(v, np.float64) for k, v in params.items()}, cfg, tok)
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, port, max_batch, chunk_steps):
    cmd = [
        sys.executable,
        "-m",
        "jaxsys.cli",
        "gpt",
        "serve",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--chunk-steps",
        str(chunk_steps),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    t0 = time.time()
    while time.time() - t0 < 180:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not come up")


async def load(url, concurrency, n_requests, max_tokens, prompts):
    import httpx

    lat, toks, errors = [], [], []
    counter = iter(range(n_requests))

    async def worker(client):
        for i in counter:
            body = {
                "model": "microgpt",
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "seed": i,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            }
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/v1/chat/completions", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                toks.append(r.json()["usage"]["completion_tokens"])
                lat.append(time.perf_counter() - t0)
            except Exception as e:  # counted, reported
                errors.append(repr(e))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": len(lat),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wall_s": wall,
        "req_per_s": len(lat) / wall,
        "tokens_per_s": sum(toks) / wall,
        "p50_s": float(np.percentile(lat, 50)) if lat else None,
        "p99_s": float(np.percentile(lat, 99)) if lat else None,
    }


def decode_bench(model_dir, n_tokens, rounds, batch):
    """Greedy decode of n_tokens from [BOS]: jax (B=1 and B=batch), numpy float64, torch (KV cache)."""
    import jax.numpy as jnp
    from torch_gpt_generate import TorchGPT

    from jaxsys.gpt.generate import generate_batch, to_device_params
    from jaxsys.gpt.inference import InferenceModel
    from jaxsys.gpt.weights_io import load_model

    params, cfg, tok = load_model(model_dir)
    dev = to_device_params(params, jnp.float32)
    npm = InferenceModel(params, cfg, tok)
    tm = TorchGPT(params, cfg.n_layer, cfg.n_head, cfg.block_size)
    prompt = [tok.bos]

    def jax_run(B):
        out = generate_batch(dev, cfg, [prompt] * B, n_tokens, greedy=True, stop_ids=())
        assert all(len(g.tokens) == n_tokens for g in out)
        return out[0].tokens

    def np_run():
        return npm.generate_from_prompt(prompt, n_tokens, greedy=True, stop_ids=[])

    import torch

    n_threads = torch.get_num_threads()

    def torch_run(B, threads):
        torch.set_num_threads(threads)  # 1 thread: no spinning workers on this shared 2-core box
        try:
            return tm.generate([prompt] * B, n_tokens)[0]
        finally:
            torch.set_num_threads(n_threads)

    runs = {
        "jax_b1": lambda: jax_run(1),
        f"jax_b{batch}": lambda: jax_run(batch),
        "numpy_f64_b1": np_run,
        "torch_b1": lambda: torch_run(1, n_threads),
        "torch_1thr_b1": lambda: torch_run(1, 1),
        f"torch_b{batch}": lambda: torch_run(batch, n_threads),
        f"torch_1thr_b{batch}": lambda: torch_run(batch, 1),
    }
    rows = {
        "jax_b1": 1,
        f"jax_b{batch}": batch,
        "numpy_f64_b1": 1,
        "torch_b1": 1,
        "torch_1thr_b1": 1,
        f"torch_b{batch}": batch,
        f"torch_1thr_b{batch}": batch,
    }
    outs = {k: f() for k, f in runs.items()}  # warm-up / compile, and agreement check
    agree = {k: sum(a == b for a, b in zip(v, outs["numpy_f64_b1"])) / n_tokens for k, v in outs.items()}
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    res = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        res[k] = {"median_s": med, "tokens_per_s": rows[k] * n_tokens / med, "greedy_agreement_with_numpy": agree[k]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: a random 128/4/6/512 model)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests", default="16,64,128", help="requests per round at 1,8,32 clients")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--chunk-steps", type=int, default=4)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--size", default="128,4,6,512", help="random model n_embd,n_head,n_layer,block")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "serve.json"))
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    size = [int(x) for x in a.size.split(",")]
    model_dir = Path(a.model) if a.model else random_chat_model(Path(tmp.name) / "model", *size)
    levels = [1, 8, 32]
    n_req = [int(x) for x in a.requests.split(",")]
    prompts = [
        "hello",
        "how are you?",
        "what is your name?",
        "tell me a joke",
        "good morning",
        "do you like music?",
        "what do you do?",
        "bye",
    ]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "model": str(a.model or f"random chat model n_embd,n_head,n_layer,block = {a.size}"),
        "max_tokens": a.max_tokens,
        "max_batch": a.max_batch,
        "chunk_steps": a.chunk_steps,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    if not a.skip_load:
        port = free_port()
        proc = start_server(model_dir, port, a.max_batch, a.chunk_steps)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, 8, 8, 8, prompts))  # warm-up
            per = {c: [] for c in levels}
            for r in range(a.rounds):
                for c, n in zip(levels, n_req):
                    per[c].append(asyncio.run(load(url, c, n, a.max_tokens, prompts)))
                    print(
                        f"round {r} clients {c}: {per[c][-1]['tokens_per_s']:.0f} tok/s {per[c][-1]['errors']} errors",
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait(30)
        summary = {}
        for c in levels:
            rs = per[c]
            summary[str(c)] = {
                k: statistics.median([x[k] for x in rs]) for k in ("req_per_s", "tokens_per_s", "p50_s", "p99_s")
            }
            summary[str(c)]["errors"] = sum(x["errors"] for x in rs)
            summary[str(c)]["requests"] = sum(x["requests"] for x in rs)
            summary[str(c)]["error_samples"] = [e for x in rs for e in x["error_samples"]][:3]
        base = summary["1"]["tokens_per_s"]
        for c in levels:
            summary[str(c)]["tokens_per_s_vs_1_client"] = summary[str(c)]["tokens_per_s"] / base
        result["load"] = summary
        result["load_rounds"] = {str(c): per[c] for c in levels}
        print(f"\n{'clients':>8} {'req/s':>8} {'tok/s':>9} {'x 1 client':>10} {'p50 s':>7} {'p99 s':>7} {'errors':>6}")
        for c in levels:
            s = summary[str(c)]
            print(
                f"{c:>8} {s['req_per_s']:>8.2f} {s['tokens_per_s']:>9.1f} "
                f"{s['tokens_per_s_vs_1_client']:>10.2f} {s['p50_s']:>7.3f} {s['p99_s']:>7.3f} "
                f"{s['errors']:>6}"
            )
    dec = decode_bench(model_dir, a.decode_tokens, max(3, a.rounds + 1), a.max_batch)
    result["decode"] = dec
    ref = dec["numpy_f64_b1"]["tokens_per_s"]
    print(f"\n{'decoder':>16} {'tok/s':>9} {'x numpy':>8} {'greedy agree':>12}")
    for k, v in dec.items():
        print(
            f"{k:>16} {v['tokens_per_s']:>9.1f} {v['tokens_per_s'] / ref:>8.2f} "
            f"{v['greedy_agreement_with_numpy']:>12.2f}"
        )
    from jaxsys.train.io import atomic_write_json

    atomic_write_json(a.out, result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
