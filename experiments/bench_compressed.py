"""Compressed inference benchmark (issue 8), side by side in one run.

1. Compression ratio per mode for a trained jaxsys GPT: int8 (per-channel q8), bf16 lossless,
   fp32 lossless; vs zstd -19 of the same raw bytes, and vs the exponent-entropy bound (exponent
   plane at its order-0 entropy, every other plane stored raw).
2. Tokens/s and resident bytes of compressed inference (int8 mode) with cache sizes 0, 1, half and
   all groups, with and without prefetch (async dispatch / worker thread) and fusion, decoding on
   the compute device or on a second CPU device (XLA:CPU runs one device's computations in order,
   two devices' in parallel: the only way decode and compute overlap on this CPU), vs the
   uncompressed model through the same runner; for several settings: the store's lane length
   (4096 symbols = the size-optimal default, 512 = faster decode, +0.9% size) and the number of
   generation rows decoded in lock-step (1, 16: more compute per decoded layer). Each setting's
   variants run interleaved in the same rounds; medians. Every variant's tokens are checked equal
   to the uncompressed run's. "no-prefetch" = on-demand decode, awaited at the miss; "async" =
   decode dispatched at the miss but not awaited; "prefetch" = the next group's decode issued
   before the current group's compute. "pf/no-pf excess" = (slowdown with prefetch - 1) /
   (slowdown without - 1) on the same decode device: the issue's target is <= 0.5.

    flock /tmp/jaxsys-heavy.lock python experiments/bench_compressed.py --model runs/codec-model
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax

jax.config.update("jax_num_cpu_devices", 2)  # a second CPU device for decode (before JAX starts)
import ml_dtypes
import numpy as np

from jaxsys.codec import floats, store
from jaxsys.gpt import compressed as C
from jaxsys.gpt.weights_io import load_model
from jaxsys.train.io import atomic_write_json

try:
    import zstandard
except ImportError:
    zstandard = None


def ratios(params: dict) -> list[dict]:
    rows = []
    for mode, dt in (("int8", np.float32), ("bf16 lossless", ml_dtypes.bfloat16), ("fp32 lossless", np.float32)):
        t = {k: np.asarray(v, np.float32).astype(dt) for k, v in params.items()}
        raw = sum(v.nbytes for v in t.values())
        data = store.encode_store(t, mode="int8" if mode == "int8" else "lossless")
        st = store.Store(data)
        blobs = (st.group.length if st.group else 0) + sum(
            p.length for n in st.names for p in st.entry(n).parts if st.entry(n).kind != "q8"
        )  # coded blobs: the shared-table group and the float planes, without q8 scales
        row = {
            "mode": mode,
            "raw_bytes": raw,
            "bytes": len(data),
            "pct_of_raw": 100 * len(data) / raw,
            "blob_bytes": blobs,
        }
        if mode != "int8":
            nb = np.dtype(dt).itemsize
            bound = sum(floats.exponent_entropy_bits(v) / 8 + v.size * (nb - 1) for v in t.values())
            row["exponent_bound_bytes"] = bound
            row["vs_bound_pct"] = 100 * (len(data) / bound - 1)
        else:
            row["pct_of_int8"] = 100 * len(data) / (raw / 4)
        if zstandard is not None:
            z = zstandard.ZstdCompressor(level=19)
            src = (
                [store.quantize_int8(v, per_channel=True)[0] for v in t.values()]
                if mode == "int8"
                else list(t.values())
            )
            row["zstd19_bytes"] = sum(len(z.compress(np.ascontiguousarray(v).tobytes())) for v in src)
        rows.append(row)
    return rows


def speed(params: dict, cfg, tokens: int, rounds: int, lane_symbols: int, rows: int) -> dict:
    data = C.compress_gpt(params, "int8", store.LayerOpts(shared_lane_symbols=lane_symbols))
    ref_params = C.decoded_params(data)
    n_groups = cfg.n_layer + 2
    variants = {"uncompressed": None}
    variants["cache=0 per-tensor calls"] = dict(cache_layers=0, prefetch=False, pack_groups=False)
    for k in sorted({0, 1, max(1, n_groups // 2), n_groups}):
        variants[f"cache={k} no-prefetch"] = dict(cache_layers=k, prefetch=False, sync=True)
        variants[f"cache={k} prefetch"] = dict(cache_layers=k, prefetch=True, sync=True)
    variants["cache=0 async"] = dict(cache_layers=0, prefetch=False)
    variants["cache=0 prefetch-thread"] = dict(cache_layers=0, prefetch=True, prefetch_thread=True, sync=True)
    variants["cache=0 fused"] = dict(cache_layers=0, prefetch=False, fused=True, sync=True)
    variants["cache=0 fused+prefetch"] = dict(cache_layers=0, prefetch=True, fused=True, sync=True)
    if C.second_cpu_device() is not None:
        for k in (0, 1):
            variants[f"2nd-dev cache={k} no-prefetch"] = dict(
                cache_layers=k, prefetch=False, sync=True, decode_device="second-cpu"
            )
            variants[f"2nd-dev cache={k} prefetch"] = dict(
                cache_layers=k, prefetch=True, sync=True, decode_device="second-cpu"
            )
        variants["2nd-dev cache=0 async"] = dict(cache_layers=0, prefetch=False, decode_device="second-cpu")
    runners = {
        n: (C.GPTRunner(cfg, params=ref_params) if kw is None else C.compressed_runner(data, cfg, **kw))
        for n, kw in variants.items()
    }
    prompts = [[(7 * b) % cfg.vocab_size] for b in range(rows)]
    ref = runners["uncompressed"].generate_batch(prompts, tokens)
    for n, r in runners.items():  # compile and check
        if r.generate_batch(prompts, tokens) != ref:
            raise AssertionError(f"{n}: tokens differ from the uncompressed run")
    times = {n: [] for n in runners}
    for _ in range(rounds):
        for n, r in runners.items():
            t0 = time.perf_counter()
            r.generate_batch(prompts, tokens)
            times[n].append(time.perf_counter() - t0)
    base = statistics.median(times["uncompressed"])
    raw = sum(np.asarray(v, np.float32).nbytes for v in params.values())
    out = []
    for n, r in runners.items():
        t = statistics.median(times[n])
        act = r.activation_bytes(rows)
        if r.cache is None:
            resident, hit = raw + act, None
        else:
            st = r.cache.stats()
            resident, hit = st["compressed_bytes"] + st["cached_bytes"] + act, st["hit_rate"]
        out.append(
            {
                "variant": n,
                "tokens_per_s": rows * tokens / t,
                "ms_per_step": 1e3 * t / tokens,
                "slowdown": t / base,
                "resident_bytes": resident,
                "resident_vs_uncompressed": resident / (raw + act),
                "hit_rate": hit,
            }
        )
    # decode vs compute time per step (synchronised profile run, cache=0)
    prof = C.compressed_runner(data, cfg, cache_layers=0, prefetch=False, profile=True)
    prof.generate_batch(prompts, 2)
    prof.decode_s = prof.compute_s = 0.0
    prof.generate_batch(prompts, tokens)
    sl = {r["variant"]: r["slowdown"] for r in out}
    pairs = {
        "prefetch": ("cache=0 prefetch", "cache=0 no-prefetch"),
        "prefetch-thread": ("cache=0 prefetch-thread", "cache=0 no-prefetch"),
        "fused+prefetch": ("cache=0 fused+prefetch", "cache=0 fused"),
        "async": ("cache=0 async", "cache=0 no-prefetch"),
        "2nd-dev prefetch": ("2nd-dev cache=0 prefetch", "2nd-dev cache=0 no-prefetch"),
        "2nd-dev async": ("2nd-dev cache=0 async", "2nd-dev cache=0 no-prefetch"),
        "2nd-dev prefetch vs same-dev no-prefetch": ("2nd-dev cache=0 prefetch", "cache=0 no-prefetch"),
    }
    excess = {k: (sl[a] - 1) / (sl[b] - 1) for k, (a, b) in pairs.items() if a in sl and b in sl and sl[b] > 1}
    return {
        "lane_symbols": lane_symbols,
        "rows": rows,
        "tokens": tokens,
        "rounds": rounds,
        "store_bytes": len(data),
        "variants": out,
        "decode_ms_per_step": 1e3 * prof.decode_s / tokens,
        "compute_ms_per_step": 1e3 * prof.compute_s / tokens,
        "prefetch_excess_ratio": excess,
    }


def print_speed(sp: dict) -> None:
    print(
        f"\n-- store lanes >= {sp['lane_symbols']} symbols ({sp['store_bytes']} B), {sp['rows']} row(s), "
        f"{sp['tokens']} tokens, {sp['rounds']} rounds; profile cache=0: decode "
        f"{sp['decode_ms_per_step']:.2f} ms/step, compute {sp['compute_ms_per_step']:.2f} ms/step"
    )
    print(f"{'variant':<30} {'tok/s':>8} {'ms/step':>8} {'slowdown':>9} {'resident':>10} {'vs unc.':>8} {'hit':>6}")
    for r in sp["variants"]:
        h = f"{r['hit_rate']:.2f}" if r["hit_rate"] is not None else "-"
        print(
            f"{r['variant']:<30} {r['tokens_per_s']:>8.1f} {r['ms_per_step']:>8.2f} {r['slowdown']:>8.2f}x "
            f"{r['resident_bytes']:>10} {r['resident_vs_uncompressed']:>7.2f}x {h:>6}"
        )
    ex = ", ".join(f"{k} {v:.2f}" for k, v in sp["prefetch_excess_ratio"].items())
    print(f"pf/no-pf excess slowdown (target <= 0.5): {ex}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/codec-model")
    ap.add_argument("--lane-symbols", default="4096,512", help="store settings (symbols per lane)")
    ap.add_argument("--rows", default="1,16", help="generation rows decoded in lock-step")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="runs/bench/codec_compressed.json")
    a = ap.parse_args(argv)
    params, cfg, _ = load_model(a.model)
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "device": str(jax.devices()[0]),
        "model": a.model,
        "config": cfg.to_dict(),
        "n_params": int(sum(v.size for v in params.values())),
        "ratios": ratios(params),
    }
    print(f"model {a.model}: {res['n_params']} params, {cfg.to_dict()}")
    print(f"{'mode':<15} {'raw':>9} {'bytes':>9} {'% raw':>7} {'blobs':>9} {'vs bound':>9} {'zstd-19':>9}")
    for r in res["ratios"]:
        vb = f"{r['vs_bound_pct']:>+8.2f}%" if "vs_bound_pct" in r else " " * 9
        print(
            f"{r['mode']:<15} {r['raw_bytes']:>9} {r['bytes']:>9} {r['pct_of_raw']:>6.1f}% "
            f"{r['blob_bytes']:>9} {vb} "
            f"{r.get('zstd19_bytes', ''):>9}"
        )
    res["speed"] = []
    for ls in (int(v) for v in a.lane_symbols.split(",")):
        for rows in (int(v) for v in a.rows.split(",")):
            sp = speed(params, cfg, a.tokens, a.rounds, ls, rows)
            print_speed(sp)
            res["speed"].append(sp)
    atomic_write_json(a.out, res)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
