"""Compressed GPT inference (jaxsys.gpt.compressed): generation from compressed weights equals
generation from the same weights uncompressed, token for token; cache eviction and prefetch order;
lossless float round trips of trained weights; a corrupted tensor blob names the tensor."""

import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from jaxsys.codec import store
from jaxsys.codec.errors import CodecError
from jaxsys.gpt import compressed as C
from jaxsys.gpt import train as gt
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.data import load_data
from jaxsys.gpt.generate import generate

OPTS = store.LayerOpts(tile_shape=(32, 32), lanes=8)


@pytest.fixture(scope="module")
def trained():
    """A tiny GPT trained for a few steps on the packaged names (real trained weights)."""
    data = load_data(None, "docs", 16)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, n_embd=32, n_head=4, n_layer=2, block_size=16)
    tcfg = gt.TrainConfig(steps=10, batch_size=16, eval_every=0, eval_batches=1, log_every=10)
    res = gt.train(data, cfg, tcfg, None, log=None, progress=False, export=False)
    params = {k: np.asarray(v, np.float32) for k, v in res.state.params.items()}
    return cfg, params


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_lossless_trained_weights_bit_exact(trained, dtype):
    _, params = trained
    t = {k: v.astype(dtype) for k, v in params.items()}
    st = store.Store(store.encode_store(t, mode="lossless", opts=OPTS))
    for k, v in t.items():
        assert st.decode(k).tobytes() == v.tobytes()
    if dtype != np.float16:  # f16's top byte mixes 5 exponent and 3 mantissa bits
        assert st.nbytes < sum(v.nbytes for v in t.values())


@pytest.mark.parametrize(
    "mode,configs",
    [
        (
            "int8",
            (
                dict(cache_layers=0, prefetch=False),
                dict(cache_layers=1),
                dict(cache_layers=0, fused=True),
                dict(cache_layers=0, prefetch_thread=True, sync=True),
            ),
        ),
        ("lossless", (dict(cache_layers=1, prefetch=False),)),
    ],
)
def test_compressed_generation_matches_uncompressed(trained, mode, configs):
    cfg, params = trained
    data = C.compress_gpt(params, mode, OPTS)
    ref_params = C.decoded_params(data)
    if mode == "lossless":
        assert all(ref_params[k].tobytes() == params[k].tobytes() for k in params)
    ref = C.GPTRunner(cfg, params=ref_params).generate([0, 5], 8)
    assert ref == generate(ref_params, cfg, [0, 5], 8, greedy=True)  # the engine's own generator
    for kw in configs:
        got = C.compressed_runner(data, cfg, **kw).generate([0, 5], 8)
        assert got == ref, kw
    if mode == "int8":
        sampled_ref = C.GPTRunner(cfg, params=ref_params).generate([0], 6, temperature=0.8, seed=3)
        assert C.compressed_runner(data, cfg, cache_layers=1).generate([0], 6, temperature=0.8, seed=3) == sampled_ref


def test_batched_rows_and_unpacked_groups(trained):
    """3 rows in lock-step from compressed weights (shared-table group, one decode call per layer)
    equal the uncompressed runner's rows and, row by row, the engine's own greedy generator; decoding
    each matrix in its own call (pack_groups=False) gives the same tokens."""
    cfg, params = trained
    data = C.compress_gpt(params, "int8", OPTS)
    ref_params = C.decoded_params(data)
    prompts = [[0, 5], [3, 1], [7, 7]]
    ref = C.GPTRunner(cfg, params=ref_params).generate_batch(prompts, 6)
    for p, row in zip(prompts, ref):
        assert row == generate(ref_params, cfg, p, 6, greedy=True)
    got = C.compressed_runner(data, cfg, cache_layers=0, prefetch=True, fused=True).generate_batch(prompts, 6)
    assert got == ref
    r = C.compressed_runner(data, cfg, cache_layers=1, pack_groups=False)
    assert not r.cache.packed and r.generate_batch(prompts, 6) == ref
    r = C.compressed_runner(data, cfg, cache_layers=0, pack_groups=False, fused=True)
    assert r.generate_batch(prompts, 6) == ref


def test_cache_eviction_and_prefetch_order(trained):
    cfg, params = trained
    data = C.compress_gpt(params, "int8", OPTS)
    r = C.compressed_runner(data, cfg, cache_layers=2, prefetch=True)
    kv = [(np.zeros((1, 4, 16, 8), np.float32),) * 2 for _ in range(cfg.n_layer)]
    r.step(kv, 0, 0, 0.0, 0.5)
    ev = r.cache.events
    # embed: a miss; every later group was prefetched while the previous one computed
    assert ev[0] == ("miss", "embed")
    assert ev[1] == ("prefetch", "layer0")
    order = [g for e, g in ev if e == "prefetch"]
    assert order == ["layer0", "layer1", "head", "embed"]
    # LRU with 2 groups: inserting layer1 evicts embed, head evicts layer0
    evicted = [g for e, g in ev if e == "evict"]
    assert evicted[:2] == ["embed", "layer0"]
    assert r.cache.stats()["prefetch_hits"] == 3
    no = C.compressed_runner(data, cfg, cache_layers=0, prefetch=False)
    no.step(kv, 0, 0, 0.0, 0.5)
    assert [e for e, _ in no.cache.events] == ["miss"] * 4 and no.cache.cached_bytes() == 0


def test_byte_bounded_cache(trained):
    cfg, params = trained
    data = C.compress_gpt(params, "int8", OPTS)
    layer_bytes = sum(params[f"layer0.{m}"].nbytes for m in C.LAYER_MATRICES)
    r = C.compressed_runner(data, cfg, cache_bytes=layer_bytes, prefetch=False)
    r.generate([0], 3)
    assert r.cache.cached_bytes() <= layer_bytes
    assert r.cache.evictions > 0


def test_corrupted_tensor_named(trained):
    cfg, params = trained
    data = bytearray(C.compress_gpt(params, "int8", OPTS))
    st = store.Store(bytes(data))
    p = st.entry("layer1.mlp_fc1").parts[0]  # its float32 scales
    data[len(data) - len(st._data) + p.offset + p.length // 2] ^= 0x10
    with pytest.raises(CodecError, match="layer1.mlp_fc1"):
        C.compressed_runner(bytes(data), cfg)


def test_run_gpt_cli(trained, tmp_path, capsys):
    from jaxsys.cli import main
    from jaxsys.gpt.data import load_data
    from jaxsys.gpt.weights_io import save_model

    cfg, params = trained
    save_model(tmp_path / "m", params, cfg, load_data(None, "docs", 16).tokenizer)
    assert (
        main(["gpt", "run-compressed", "--model", str(tmp_path / "m"), "--cache-layers", "1", "--max-tokens", "4"]) == 0
    )
    out = capsys.readouterr().out
    assert "identical_tokens: True" in out and "resident_bytes" in out


_TWO_DEVICE_CHILD = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
import numpy as np
from jaxsys.codec import store
from jaxsys.gpt import compressed as C
from jaxsys.gpt.config import GPTConfig

z = np.load(sys.argv[1])
params = {k: z[k] for k in z.files if k != "cfg"}
cfg = GPTConfig(**json.loads(str(z["cfg"])))
data = C.compress_gpt(params, "int8", store.LayerOpts(tile_shape=(32, 32), lanes=8))
ref = C.GPTRunner(cfg, params=C.decoded_params(data)).generate_batch([[0, 5], [2, 3]], 6)
res = {}
for name, kw in {"pf": dict(prefetch=True, sync=True), "cache1": dict(cache_layers=1, prefetch=False)}.items():
    kw.setdefault("cache_layers", 0)
    r = C.compressed_runner(data, cfg, decode_device="second-cpu", **kw)
    dev = {str(d) for g in r.cache.packed.values() for d in g.pack.devices()}
    res[name] = {"equal": r.generate_batch([[0, 5], [2, 3]], 6) == ref, "pack_devices": sorted(dev)}
print("RESULT " + json.dumps(res))
"""


def test_decode_on_second_cpu_device(trained, tmp_path):
    """In a child process with 2 CPU devices: packs live (and decode) on device 1, the layers run on
    device 0, and the tokens equal the uncompressed run's."""
    cfg, params = trained
    np.savez(tmp_path / "p.npz", cfg=json.dumps(cfg.to_dict()), **params)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _TWO_DEVICE_CHILD, str(tmp_path / "p.npz")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stderr[-2000:]
    res = json.loads(line[0][7:])
    for name, r in res.items():
        assert r["equal"], name
        assert r["pack_devices"] == ["cpu:1"], r
