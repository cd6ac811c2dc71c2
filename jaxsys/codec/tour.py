"""Tour stage: compress a discretised-Gaussian int8 layer and an int8-quantised float layer, decode
them with the JAX decoder, check bit-exactness and report size vs the entropy bound and throughput."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec.bench import coded_entropy_bits, gaussian_int8, group_symbols, quick_bench
from jaxsys.codec.decode import decode_layer
from jaxsys.codec.quant import dequantize_int8, quantize_int8
from jaxsys.codec.tiles import entropy_bits
from jaxsys.train.io import atomic_write_json, save_figure


def run_stage(run_dir: Path, quick: bool) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    n = 512 if quick else 2048
    res = quick_bench(n=n, repeats=2 if quick else 3)
    # a float "weight" matrix: per-channel int8 quantisation, then the codec
    rng = np.random.default_rng(1)
    w = (rng.standard_t(5, (256, 512)) * 0.02).astype(np.float32)
    q, scale = quantize_int8(w, per_channel=True)
    blob = fmt.encode_layer(q)
    back = np.asarray(decode_layer(blob))
    if not np.array_equal(back, q):
        raise AssertionError("tour: quantised layer did not round-trip")
    err = float(np.abs(dequantize_int8(back, scale) - w).max())
    res.update(
        {
            "q8_ratio_vs_int8": q.nbytes / len(blob),
            "q8_ratio_vs_f32": w.nbytes / len(blob),
            "q8_over_entropy_pct": 100 * (8 * len(blob) / coded_entropy_bits(q, blob) - 1),
            "q8_max_abs_err": err,
            "zlib9_ratio": res["raw_bytes"] / len(zlib.compress(gaussian_int8(n, n).tobytes(), 9)),
        }
    )
    # a "model" of 8 small int8 layers: one shared-table group blob vs one blob + table per layer
    layers = [
        np.clip(np.rint(rng.normal(0, s, (128, 128))), -127, 127).astype(np.int8)
        for s in (20, 25, 30, 35, 40, 30, 25, 45)
    ]
    gblob = G.encode_group(layers, min_lane_symbols=4096)
    if not all(np.array_equal(a, b) for a, b in zip(G.decode_group_numpy(gblob), layers)):
        raise AssertionError("tour: group blob did not round-trip")
    pooled = entropy_bits(group_symbols(gblob, layers)) / 8
    res.update(
        {
            "shared_table_over_pooled_pct": 100 * (len(gblob) / pooled - 1),
            "per_layer_tables_over_pooled_pct": 100 * (sum(len(fmt.encode_layer(x)) for x in layers) / pooled - 1),
        }
    )
    atomic_write_json(run_dir / "codec.json", res)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = gaussian_int8(n, n)
    counts = np.bincount(x.view(np.uint8).reshape(-1), minlength=256)
    freq = fmt.parse_layer(fmt.encode_layer(x)).freq
    order = (np.arange(256) + 128) % 256  # plot symbols as signed -128..127
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.semilogy(np.arange(-128, 128), counts[order] / counts.sum(), label="empirical")
    ax.semilogy(np.arange(-128, 128), np.maximum(freq[order], 1e-9) / freq.sum(), "--", label="rANS table (2^14)")
    ax.set_xlabel("int8 symbol")
    ax.set_ylabel("probability")
    ax.legend()
    save_figure(fig, run_dir / "codec_table.png", dpi=100)
    plt.close(fig)
    return {
        k: res[k]
        for k in (
            "ratio",
            "over_entropy_pct",
            "decode_jax_MBps",
            "encode_MBps",
            "q8_ratio_vs_f32",
            "shared_table_over_pooled_pct",
        )
    }
