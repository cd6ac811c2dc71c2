"""Codec benchmark, all alternatives side by side in one run (interleaved rounds, medians).

Datasets: (a) 2048x2048 int8 discretised Gaussian (sigma 20), 64 tiles of 256x256; (b) the int8
per-channel-quantised weight matrices of a GPT trained by jaxsys (--gpt DIR with weights.json).

For (b) the jaxsys default for model stores is a shared-table group blob (format version 2: one
frequency table for all the model's int8 tensors, jaxsys/codec/group.py); its size is compared with
the order-0 entropy of the POOLED symbols of all tensors ("vs pooled": the bound any single shared
table can reach) and, like every method, with the sum of the per-tensor order-0 bounds ("vs H0").

Compared: jaxsys (size vs the order-0 entropy bound of the chosen predictor's symbols; numpy encoder;
decoders: jitted JAX end-to-end, JAX kernel only, vectorised numpy, scalar numpy reference measured on
one tile), zlib -9, lzma (preset 6), zstd -3 / -19, constriction's ANS (stack) coder with the
empirical categorical model (its model table is not counted in its size).

    flock /tmp/jaxsys-heavy.lock python experiments/bench_codec.py --gpt runs/codec-model,runs/gpt-names
"""

from __future__ import annotations

import argparse
import lzma
import platform
import statistics
import time
import zlib
from pathlib import Path

import jax
import numpy as np

from jaxsys.codec import decode as D
from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec.bench import coded_entropy_bits, gaussian_int8, group_symbols
from jaxsys.codec.quant import quantize_int8
from jaxsys.codec.sources import load_tensors
from jaxsys.codec.tiles import entropy_bits
from jaxsys.train.io import atomic_write_json

try:
    import constriction
except ImportError:  # bench extra
    constriction = None
try:
    import zstandard
except ImportError:
    zstandard = None


def _t(fn):
    t0 = time.perf_counter()
    r = fn()
    jax.block_until_ready(r)
    return time.perf_counter() - t0, r


class Method:
    """encode(list of uint8 arrays) -> state; decode(state) -> list; size(state) -> bytes."""

    def __init__(self, name, enc, dec, size, check=True):
        self.name, self.enc, self.dec, self.size, self.check = name, enc, dec, size, check


def _jaxsys_methods(lanes_list, tile):
    ms = []
    for L in lanes_list:
        kw = dict(tile_shape=(tile, tile), lanes=L, prob_bits=14)
        tag = f"jaxsys L={L}"
        ms.append(
            Method(
                f"{tag} jax",
                lambda xs, kw=kw: [fmt.encode_layer(x, **kw) for x in xs],
                lambda bl: [D.decode_layer(b, check=False) for b in bl],  # round trip checked below
                lambda bl: sum(map(len, bl)),
            )
        )
    return ms


def _group_methods(lane_symbols, tile):
    ms = []
    for k in lane_symbols:
        ms.append(
            Method(
                f"jaxsys shared table, lanes>={k} sym",
                lambda xs, k=k: [G.encode_group(xs, (tile, tile), 32, None, min_lane_symbols=k)],
                lambda bl: D.decode_group(bl[0], check=False),
                lambda bl: len(bl[0]),
            )
        )
    return ms


def _kernel_only(blobs):
    packs = []
    for b in blobs:
        pack, kargs, geom = D.prepare(b)
        if kargs is None:
            continue
        pack[2:4] = kargs["sums"]
        packs.append((jax.device_put(pack), kargs))
    return packs


def _np_vec(blobs):
    return [fmt.decode_layer_numpy(b) for b in blobs]


def _constriction():
    def enc(xs):
        out = []
        for x in xs:
            u = x.reshape(-1)
            p = np.bincount(u, minlength=256).astype(np.float64)
            m = constriction.stream.model.Categorical(p / p.sum(), perfect=False)
            c = constriction.stream.stack.AnsCoder()
            c.encode_reverse(u.astype(np.int32), m)
            out.append((c.get_compressed(), m, u.size))
        return out

    def dec(st):
        return [constriction.stream.stack.AnsCoder(w).decode(m, n).astype(np.uint8) for w, m, n in st]

    return Method("constriction ANS", enc, dec, lambda st: sum(w.nbytes for w, _, _ in st))


def _generic(name, c, d):
    return Method(
        name,
        lambda xs: [c(x.tobytes()) for x in xs],
        lambda st: [np.frombuffer(d(b), np.uint8) for b in st],
        lambda st: sum(map(len, st)),
    )


def run_dataset(name, arrays, repeats, lanes_list, tile, group_lane_symbols=()):
    """arrays: list of int8 arrays (layers)."""
    u8 = [np.ascontiguousarray(a).view(np.uint8) for a in arrays]
    raw = sum(a.nbytes for a in arrays)
    methods = _group_methods(group_lane_symbols, tile) + _jaxsys_methods(lanes_list, tile)
    if constriction is not None:
        methods.append(_constriction())
    methods.append(_generic("zlib -9", lambda b: zlib.compress(b, 9), zlib.decompress))
    methods.append(_generic("lzma -6", lambda b: lzma.compress(b, preset=6), lzma.decompress))
    if zstandard is not None:
        for lvl in (3, 19):
            cc = zstandard.ZstdCompressor(level=lvl)
            methods.append(_generic(f"zstd -{lvl}", cc.compress, zstandard.ZstdDecompressor().decompress))
    # encode once per method for the streams (encode timing is measured in the rounds below)
    states = {m.name: m.enc(u8 if not m.name.startswith("jaxsys") else arrays) for m in methods}
    # warm up + verify every decoder
    for m in methods:
        out = m.dec(states[m.name])
        for o, a, b in zip(out, arrays, u8):
            ok = np.array_equal(np.asarray(o).reshape(-1), np.asarray(a).reshape(-1)) or np.array_equal(
                np.asarray(o).reshape(-1), b.reshape(-1)
            )
            if not ok:
                raise AssertionError(f"{m.name} failed to round-trip {name}")
    jblobs = states[f"jaxsys L={lanes_list[0]} jax"]
    pooled = None
    if group_lane_symbols:
        gblob = states[methods[0].name][0]
        pooled = entropy_bits(group_symbols(gblob, arrays)) / 8
    packs = _kernel_only(jblobs)
    kernel = lambda: [
        D.decode_kernel(
            p,
            n_lanes=k["n_lanes"],
            steps=k["steps"],  # noqa
            prob_bits=k["prob_bits"],
        )
        for p, k in packs
    ]
    kernel()
    times = {m.name: {"enc": [], "dec": []} for m in methods}
    times["jaxsys kernel only"] = {"dec": []}
    times["jaxsys numpy-vectorised"] = {"dec": []}
    for r in range(repeats):
        for m in methods:
            src = arrays if m.name.startswith("jaxsys") else u8
            times[m.name]["enc"].append(_t(lambda: m.enc(src))[0])
            times[m.name]["dec"].append(_t(lambda: m.dec(states[m.name]))[0])
        times["jaxsys kernel only"]["dec"].append(_t(kernel)[0])
        times["jaxsys numpy-vectorised"]["dec"].append(_t(lambda: _np_vec(jblobs))[0])
    # scalar reference on one layer's first tile worth of symbols (it is ~1e3x slower)
    big = int(np.argmax([a.size for a in arrays]))
    sub = np.ascontiguousarray(arrays[big].reshape(-1)[: tile * tile])
    sb = fmt.encode_layer(sub, (1, tile * tile), lanes_list[0], 14, allow_raw=False)
    t_ref, _ = _t(lambda: fmt.decode_layer_reference(sb))
    hbits = sum(coded_entropy_bits(a, b) for a, b in zip(arrays, jblobs))
    bound = hbits / 8
    rows = []
    for m in methods:
        size = m.size(states[m.name])
        enc = statistics.median(times[m.name]["enc"])
        dec = statistics.median(times[m.name]["dec"])
        row = {
            "method": m.name,
            "bytes": size,
            "ratio": raw / size,
            "vs_entropy_pct": 100 * (size / bound - 1),
            "encode_MBps": raw / 1e6 / enc,
            "decode_MBps": raw / 1e6 / dec,
        }
        if pooled is not None:
            row["vs_pooled_pct"] = 100 * (size / pooled - 1)
        rows.append(row)
    for nm in ("jaxsys kernel only", "jaxsys numpy-vectorised"):
        rows.append({"method": nm, "decode_MBps": raw / 1e6 / statistics.median(times[nm]["dec"])})
    rows.append({"method": "jaxsys numpy scalar reference (one tile)", "decode_MBps": sub.nbytes / 1e6 / t_ref})
    preds = [fmt.PREDICTOR_NAMES[fmt.parse_header(b).predictor] for b in jblobs]
    return {
        "dataset": name,
        "layers": len(arrays),
        "raw_bytes": raw,
        "entropy_bound_bytes": bound,
        "pooled_entropy_bound_bytes": pooled,
        "predictors": {p: preds.count(p) for p in set(preds)},
        "rows": rows,
        "repeats": repeats,
    }


def gpt_arrays(model_dir: Path):
    t = load_tensors(model_dir / "weights.json")
    names = sorted(t)
    arrs = [quantize_int8(t[n], per_channel=True)[0] for n in names if t[n].ndim == 2]
    return arrs, names


def print_table(res):
    pooled = res.get("pooled_entropy_bound_bytes")
    print(
        f"\n== {res['dataset']}: {res['layers']} layer(s), {res['raw_bytes']} bytes, entropy bound "
        f"(sum of per-tensor H0) {res['entropy_bound_bytes']:.0f} B"
        + (f", pooled-symbols H0 {pooled:.0f} B" if pooled else "")
        + f", predictors {res['predictors']}"
    )
    print(f"{'method':<42} {'bytes':>10} {'ratio':>7} {'vs H0':>8} {'vs pooled':>9} {'enc MB/s':>9} {'dec MB/s':>9}")
    for r in res["rows"]:
        b = f"{r['bytes']:>10}" if "bytes" in r else " " * 10
        ra = f"{r['ratio']:>7.3f}" if "ratio" in r else " " * 7
        vh = f"{r['vs_entropy_pct']:>+7.2f}%" if "vs_entropy_pct" in r else " " * 8
        en = f"{r['encode_MBps']:>9.1f}" if "encode_MBps" in r else " " * 9
        vp = f"{r['vs_pooled_pct']:>+8.2f}%" if "vs_pooled_pct" in r else " " * 9
        print(f"{r['method']:<42} {b} {ra} {vh} {vp} {en} {r['decode_MBps']:>9.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--gpt", default="runs/codec-model", help="folder(s), comma-separated, each with a jaxsys GPT weights.json"
    )
    ap.add_argument(
        "--group-lane-symbols", default="4096,512", help="shared-table group blobs for (b): symbols per lane at least"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lanes", default="32,64,128")
    ap.add_argument("--out", default="runs/bench/codec.json")
    a = ap.parse_args(argv)
    lanes = [int(v) for v in a.lanes.split(",")]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "datasets": [],
    }
    res = run_dataset(
        "gaussian 2048x2048 int8 sigma=20, 64 tiles 256x256", [gaussian_int8(2048, 2048, 20.0)], a.repeats, lanes, 256
    )
    print_table(res)
    results["datasets"].append(res)
    gls = [int(v) for v in a.group_lane_symbols.split(",") if v]
    for gd in a.gpt.split(","):
        gdir = Path(gd)
        if not (gdir / "weights.json").is_file():
            print(f"(no GPT weights at {gdir}; dataset (b) skipped for it)")
            continue
        arrs, names = gpt_arrays(gdir)
        res = run_dataset(
            f"GPT {gdir} int8 per-channel ({sum(x.size for x in arrs)} weights)", arrs, a.repeats, lanes, 256, gls
        )
        res["model_dir"] = str(gdir)
        print_table(res)
        results["datasets"].append(res)
    atomic_write_json(a.out, results)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
