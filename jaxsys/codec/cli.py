"""`jaxsys codec compress|decompress|info|bench`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from jaxsys.errors import DataError


def _opts(args):
    from jaxsys.codec.store import LayerOpts

    return LayerOpts(
        tile_shape=(args.tile, args.tile),
        lanes=args.lanes,
        prob_bits=args.prob_bits,
        predictor=args.predictor,
        shared_table=not args.no_shared_table,
        shared_lane_symbols=args.lane_symbols,
    )


def _compress(args) -> int:
    from jaxsys.codec import store

    tensors = store.load_tensors(args.input)
    t0 = time.perf_counter()
    data = store.encode_store(tensors, mode=args.mode, per_channel=not args.per_tensor, opts=_opts(args))
    store.atomic_write_bytes(args.output, data)
    raw = sum(np.asarray(v).nbytes for v in tensors.values())
    print(
        f"{args.input} -> {args.output}: {len(tensors)} tensor(s), {raw} -> {len(data)} bytes "
        f"(ratio {raw / len(data):.3f}) in {time.perf_counter() - t0:.2f}s"
    )
    return 0


def _decompress(args) -> int:
    from jaxsys.codec import store

    st = store.Store.open(args.input)
    tensors = {n: st.decode(n) for n in st.names}
    out = Path(args.output)
    suf = out.suffix.lower()
    if suf == ".safetensors":
        store.write_safetensors(out, tensors)
    elif suf == ".npz":
        import io

        buf = io.BytesIO()
        np.savez(buf, **tensors)
        store.atomic_write_bytes(out, buf.getvalue())
    elif suf == ".npy":
        if len(tensors) != 1:
            raise DataError(f"{args.input} holds {len(tensors)} tensors; write .safetensors or .npz")
        import io

        buf = io.BytesIO()
        np.save(buf, next(iter(tensors.values())))
        store.atomic_write_bytes(out, buf.getvalue())
    else:
        raise DataError(f"output must be .npy, .npz or .safetensors, got {out.name}")
    print(f"{args.input} -> {out}: {len(tensors)} tensor(s)")
    return 0


def info_rows(st) -> list[dict]:
    from jaxsys.codec import format as fmt

    rows = []
    for n in st.names:
        e = st.entry(n)
        raw = int(np.prod(e["shape"] or [1])) * np.dtype("uint16" if e["dtype"] == "bfloat16" else e["dtype"]).itemsize
        parts = []
        if "member" in e:
            m = st.parsed_group().members[e["member"]]
            h = m.header
            coding = "raw" if h.coding == fmt.CODING_RAW else "rans"
            bits = 8 * st.compressed_bytes(n) / max(h.rows * h.cols, 1) if coding == "rans" else 8.0
            parts.append(f"group/{coding}/{fmt.PREDICTOR_NAMES[h.predictor]}:{bits:.2f}b")
        for i in range(len(e["parts"])):
            b = st.part(n, i)
            if bytes(b[:4]) == fmt.MAGIC:
                li = fmt.layer_info(b)
                parts.append(f"{li['coding']}/{li['predictor']}:{li['bits_per_symbol']:.2f}b")
        comp = st.compressed_bytes(n)
        rows.append(
            {
                "name": n,
                "kind": e["kind"],
                "dtype": e["dtype"],
                "shape": e["shape"],
                "raw_bytes": raw,
                "bytes": comp,
                "ratio": raw / comp,
                "parts": " ".join(parts),
            }
        )
    return rows


def _info(args) -> int:
    from jaxsys.codec import store

    st = store.Store.open(args.input)
    rows = info_rows(st)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    w = max([len(r["name"]) for r in rows] + [4])
    print(f"{'name':<{w}}  {'kind':<5} {'dtype':<8} {'shape':<14} {'raw':>10} {'coded':>10} {'ratio':>6}  parts")
    for r in rows:
        print(
            f"{r['name']:<{w}}  {r['kind']:<5} {r['dtype']:<8} {str(r['shape']):<14} "
            f"{r['raw_bytes']:>10} {r['bytes']:>10} {r['ratio']:>6.3f}  {r['parts']}"
        )
    raw = sum(r["raw_bytes"] for r in rows)
    print(
        f"total: {raw} -> {st.nbytes} bytes (ratio {raw / st.nbytes:.3f}, container overhead "
        f"{st.nbytes - sum(r['bytes'] for r in rows)} bytes)"
    )
    return 0


def _bench(args) -> int:
    from jaxsys.codec.bench import quick_bench

    res = quick_bench(n=args.size, tile=args.tile, lanes=args.lanes, prob_bits=args.prob_bits, repeats=args.repeats)
    for k, v in res.items():
        print(f"{k:>24}: {v:.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
    return 0


def _run_gpt(args) -> int:
    # CLI glue only: the codec library never imports a system; the GPT runner lives in jaxsys.gpt
    from jaxsys.gpt.compressed import run_report

    cache = None if args.cache_layers < 0 else args.cache_layers
    r = run_report(
        args.model,
        cache,
        prompt=args.prompt,
        max_new_tokens=args.max_tokens,
        mode=args.mode,
        prefetch=not args.no_prefetch,
        fused=args.fused,
    )
    for k, v in r.items():
        print(f"{k:>26}: {v:.4g}" if isinstance(v, float) else f"{k:>26}: {v}")
    return 0 if r["identical_tokens"] else 1


def _add_layer_opts(p):
    p.add_argument("--tile", type=int, default=256, help="square tile side")
    p.add_argument("--lanes", type=int, default=32, help="interleaved rANS lanes per tile")
    p.add_argument("--prob-bits", type=int, default=14, help="frequency precision 12..16")


def register(sub) -> None:
    p = sub.add_parser("codec", help="batched rANS codec for weight tensors")
    gsub = p.add_subparsers(dest="codec_cmd")
    c = gsub.add_parser("compress", help="compress .npy/.npz/.safetensors/weights.json into a container")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "lossless", "int8"],
        help="floats: lossless byte planes (auto) or int8 quantisation",
    )
    c.add_argument("--per-tensor", action="store_true", help="int8 mode: one scale per tensor")
    c.add_argument("--predictor", default="auto", choices=["auto", "none", "delta"])
    c.add_argument(
        "--no-shared-table", action="store_true", help="one blob + table per int8 tensor (container version 1)"
    )
    c.add_argument(
        "--lane-symbols",
        type=int,
        default=4096,
        help="shared-table group: symbols per lane at least (fewer lanes = smaller, slower)",
    )
    _add_layer_opts(c)
    c.set_defaults(func=_compress)
    d = gsub.add_parser("decompress", help="container -> .npy/.npz/.safetensors")
    d.add_argument("input")
    d.add_argument("output")
    d.set_defaults(func=_decompress)
    i = gsub.add_parser("info", help="per-tensor table: ratio, coding, bits per symbol")
    i.add_argument("input")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)
    b = gsub.add_parser("bench", help="quick encode/decode throughput on a discretised Gaussian")
    b.add_argument("--size", type=int, default=1024, help="square layer side")
    b.add_argument("--repeats", type=int, default=3)
    _add_layer_opts(b)
    b.set_defaults(func=_bench)
    r = gsub.add_parser("run-gpt", help="run a jaxsys GPT from compressed weights and account for it")
    r.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    r.add_argument("--cache-layers", type=int, default=1, help="decoded groups kept (-1: all)")
    r.add_argument("--mode", default="int8", choices=["int8", "lossless"])
    r.add_argument("--prompt", default="")
    r.add_argument("--max-tokens", type=int, default=32)
    r.add_argument("--no-prefetch", action="store_true")
    r.add_argument("--fused", action="store_true", help="fuse a layer's decode with its compute")
    r.set_defaults(func=_run_gpt)
