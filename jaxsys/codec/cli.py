"""`jaxsys codec compress|decompress|info|bench` (compressed GPT inference: `jaxsys gpt run-compressed`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from jaxsys.errors import DataError
from jaxsys.train.io import atomic_write_bytes


def _opts(args):
    from jaxsys.codec.store import LayerOpts

    return LayerOpts(
        tile_shape=(args.tile, args.tile),
        lanes=args.lanes,
        prob_bits=args.prob_bits,
        predictor=args.predictor,
        shared_lane_symbols=args.lane_symbols,
    )


def _compress(args) -> int:
    from jaxsys.codec import store
    from jaxsys.codec.sources import load_tensors

    tensors = load_tensors(args.input)
    t0 = time.perf_counter()
    data = store.encode_store(tensors, mode=args.mode, per_channel=not args.per_tensor, opts=_opts(args))
    atomic_write_bytes(args.output, data)
    raw = sum(np.asarray(v).nbytes for v in tensors.values())
    print(
        f"{args.input} -> {args.output}: {len(tensors)} tensor(s), {raw} -> {len(data)} bytes "
        f"(ratio {raw / len(data):.3f}) in {time.perf_counter() - t0:.2f}s"
    )
    if args.mode == "int8":
        lossy = sorted({v.dtype.name for v in tensors.values() if v.dtype.kind == "f"})
        if lossy:
            print(f"int8 mode is lossy: {', '.join(lossy)} tensors decompress to their own dtype, quantised")
    return 0


def _decompress(args) -> int:
    from jaxsys.codec import store
    from jaxsys.codec.sources import write_safetensors

    st = store.Store.open(args.input)
    tensors = {n: st.decode(n) for n in st.names}
    out = Path(args.output)
    suf = out.suffix.lower()
    if suf == ".safetensors":
        write_safetensors(out, tensors)
    elif suf == ".npz":
        import io

        buf = io.BytesIO()
        np.savez(buf, **tensors)
        atomic_write_bytes(out, buf.getvalue())
    elif suf == ".npy":
        if len(tensors) != 1:
            raise DataError(f"{args.input} holds {len(tensors)} tensors; write .safetensors or .npz")
        import io

        buf = io.BytesIO()
        np.save(buf, next(iter(tensors.values())))
        atomic_write_bytes(out, buf.getvalue())
    else:
        raise DataError(f"output must be .npy, .npz or .safetensors, got {out.name}")
    print(f"{args.input} -> {out}: {len(tensors)} tensor(s)")
    return 0


def info_rows(st) -> list[dict]:
    from jaxsys.codec import format as fmt

    rows = []
    for n in st.names:
        e = st.entry(n)
        hs = st.headers(n)
        parts = []
        if e.member is not None:
            h = hs[0]
            coding = "raw" if h.coding == fmt.CODING_RAW else "rans"
            bits = 8 * st.compressed_bytes(n) / max(h.size, 1) if coding == "rans" else 8.0
            parts.append(f"group/{coding}/{fmt.PREDICTOR_NAMES[h.predictor]}:{bits:.2f}b")
        else:
            for i in range(len(e.parts)):
                li = fmt.layer_info(st.part(n, i))
                parts.append(f"{li['coding']}/{li['predictor']}:{li['bits_per_symbol']:.2f}b")
        raw = e.size * e.dtype.itemsize
        comp = st.compressed_bytes(n)
        rows.append(
            {
                "name": n,
                "kind": e.kind,
                "dtype": e.dtype.name,
                "shape": list(e.shape),
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
