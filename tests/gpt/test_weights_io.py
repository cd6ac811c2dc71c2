import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsys.errors import DataError, JaxsysError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.gpt.weights_io import expected_shapes, load_model, load_safetensors, save_model, save_safetensors


def _model(chat=False, seed=0):
    tok = Tokenizer.from_corpus("abcé", chat=chat)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=4, n_head=2, n_layer=2, block_size=5)
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, 0.08, s) for k, s in expected_shapes(cfg).items()}
    return params, cfg, tok


@pytest.mark.parametrize("chat", [False, True])
def test_round_trip_exact(tmp_path, chat):
    params, cfg, tok = _model(chat)
    save_model(tmp_path, params, cfg, tok)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "weights.json"]  # no temp files
    meta = json.loads((tmp_path / "meta.json").read_text("utf-8"))
    assert meta["chars"] == ["a", "b", "c", "é"] and meta["vocab_size"] == tok.vocab_size
    assert meta["n_layer"] == 2 and meta["block_size"] == 5
    assert ("special_tokens" in meta) == chat
    weights = json.loads((tmp_path / "weights.json").read_text("utf-8"))
    assert list(weights) == list(expected_shapes(cfg))
    assert weights["layer1.mlp_fc1"][3][2] == params["layer1.mlp_fc1"][3, 2]  # rows = out
    p2, cfg2, tok2 = load_model(tmp_path)
    assert cfg2 == cfg and tok2 == tok
    for k in params:
        assert p2[k].dtype == np.float64
        np.testing.assert_array_equal(p2[k], params[k])


def test_load_hand_written_files(tmp_path):
    # V = 2 chars + BOS = 3, E = 2, one head, one layer, block 2; written by hand in the format.
    meta = {"vocab_size": 3, "n_embd": 2, "n_head": 1, "n_layer": 1, "block_size": 2, "chars": ["x", "y"]}
    eye = [[1.0, 0.0], [0.0, 1.0]]
    weights = {
        "wte": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        "wpe": [[0.0, 0.0], [0.0, 0.0]],
        "lm_head": [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]],
        "layer0.attn_wq": eye,
        "layer0.attn_wk": eye,
        "layer0.attn_wv": eye,
        "layer0.attn_wo": [[0.0, 0.0], [0.0, 0.0]],
        "layer0.mlp_fc1": [[0.0, 0.0]] * 8,
        "layer0.mlp_fc2": [[0.0] * 8, [0.0] * 8],
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "weights.json").write_text(json.dumps(weights))
    params, cfg, tok = load_model(tmp_path)
    assert cfg == GPTConfig(vocab_size=3, n_embd=2, n_head=1, n_layer=1, block_size=2)
    assert tok.bos == 2 and not tok.chat and tok.decode([0, 1, 2]) == "xy"
    np.testing.assert_array_equal(params["lm_head"], [[1, 0], [0, 1], [-1, -1]])
    # blocks are the identity (wo = fc2 = 0): logits = lm_head rmsnorm(wte[tok]) by hand
    r = 1 / np.sqrt(0.5 + 1e-5)  # rmsnorm of [1, 0]
    logits = InferenceModel(params, cfg, tok).logits_for_next([0])
    np.testing.assert_allclose(logits, [r, 0.0, -r], rtol=1e-12)


def _write(tmp_path, params, cfg, tok, edit_weights=None, edit_meta=None):
    save_model(tmp_path, params, cfg, tok)
    if edit_weights:
        w = json.loads((tmp_path / "weights.json").read_text())
        edit_weights(w)
        (tmp_path / "weights.json").write_text(json.dumps(w))
    if edit_meta:
        m = json.loads((tmp_path / "meta.json").read_text())
        edit_meta(m)
        (tmp_path / "meta.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "edit_w,edit_m,pattern",
    [
        (lambda w: w.pop("layer1.attn_wk"), None, r"'layer1.attn_wk' is missing"),
        (lambda w: w.__setitem__("wte", w["wte"][:-1]), None, r"'wte' has shape \[4, 4\], expected \[5, 4\]"),
        (lambda w: w["layer0.mlp_fc2"][1].pop(), None, r"'layer0.mlp_fc2' is ragged: row 1"),
        (lambda w: w["wpe"][0].__setitem__(1, "nan"), None, r"'wpe' entry \[0\]\[1\] is not a finite"),
        (None, lambda m: m.__setitem__("n_layer", 1), r"unexpected matrices \['layer1.attn_wk'.*mismatch"),
        (None, lambda m: m.__setitem__("n_layer", 3), r"'layer2.attn_wq' is missing"),
        (None, lambda m: m.__setitem__("n_embd", 6), r"'wte' has shape \[5, 4\], expected \[5, 6\]"),
        (None, lambda m: m.__setitem__("vocab_size", 6), r"vocab_size=6 does not match"),
        (None, lambda m: m.pop("block_size"), r"'block_size' is missing"),
        (None, lambda m: m.__setitem__("n_head", 3), r"not divisible"),
        (lambda w: w.__setitem__("wte", 3), None, r"'wte' must be a non-empty list of rows"),
    ],
)
def test_bad_files(tmp_path, edit_w, edit_m, pattern):
    params, cfg, tok = _model()
    _write(tmp_path, params, cfg, tok, edit_w, edit_m)
    with pytest.raises(DataError, match=pattern):
        load_model(tmp_path)


def test_non_utf8_and_bad_json_and_missing(tmp_path):
    params, cfg, tok = _model()
    save_model(tmp_path, params, cfg, tok)
    raw = (tmp_path / "meta.json").read_bytes().replace("é".encode(), b"\xe9")
    (tmp_path / "meta.json").write_bytes(raw)
    with pytest.raises(DataError, match="meta.json: not UTF-8"):
        load_model(tmp_path)
    (tmp_path / "meta.json").write_text('{"vocab_size": 5,')
    with pytest.raises(DataError, match="meta.json: invalid JSON"):
        load_model(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        load_model(tmp_path / "nowhere")


def test_save_rejects_bad_params(tmp_path):
    params, cfg, tok = _model()
    params["wpe"] = params["wpe"][:3]
    with pytest.raises(DataError, match=r"'wpe' has shape \[3, 4\], expected \[5, 4\]"):
        save_model(tmp_path, params, cfg, tok)
    assert not (tmp_path / "weights.json").exists()


def test_safetensors_round_trip(tmp_path):
    params, _, _ = _model()
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    path = save_safetensors(tmp_path / "model.safetensors", params32, {"n_layer": 2})
    back = load_safetensors(path)
    assert set(back) == set(params32)
    for k in params32:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], params32[k])
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a valid safetensors"):
        load_safetensors(tmp_path / "bad.safetensors")


def _meta(**kw):
    return {"vocab_size": 5, "n_embd": 4, "n_head": 2, "n_layer": 2, "block_size": 5, "chars": list("abcé"), **kw}


@pytest.mark.parametrize(
    "meta,pattern",
    [
        (_meta(n_layer=10**9), r"n_layer=1000000000 is out of range"),
        (_meta(n_embd=2**40, n_head=1), r"n_embd=1099511627776 is out of range"),
        (_meta(n_layer=1000, n_embd=4096), r"weights.json of \d+ bytes cannot hold"),
    ],
)
def test_sizes_are_checked_before_anything_is_allocated(tmp_path, meta, pattern):
    """Issue 21 item 4: n_layer 1e9 built every expected shape first and grew to 21.7 GB."""
    import tracemalloc

    params, cfg, tok = _model()
    save_model(tmp_path, params, cfg, tok)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=pattern):
            load_model(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, peak  # the weights file itself is never parsed


@pytest.mark.parametrize("which", ["meta.json", "weights.json"])
@pytest.mark.parametrize(
    "text,pattern",
    [
        ('{"n_layer": ' + "9" * 5000 + "}", "number literal of 5000 characters"),
        ("[" * 200_000 + "]" * 200_000, "nested 200000 deep"),
        ('{"n_layer": NaN}', "NaN is not valid JSON"),
    ],
)
def test_hostile_json_is_a_data_error(tmp_path, which, text, pattern):
    """Issue 21 item 5: a 5,000-digit number or a 200,000-deep list printed a traceback."""
    params, cfg, tok = _model()
    save_model(tmp_path, params, cfg, tok)
    (tmp_path / which).write_text(text + " " * 4096)  # padded: big enough to hold the model's numbers
    with pytest.raises(DataError, match=pattern):
        load_model(tmp_path)


# Fuzzing the readers: meta.json from a strategy over near-valid and arbitrary JSON, weights.json from
# mutations of a valid file; every input loads or raises DataError (a JaxsysError). 60 + 60 examples.
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_size = st.one_of(st.integers(-3, 9), st.sampled_from([10**9, 2**31, 2**62, 10**30]), _json)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "vocab_size": _size,
            "n_embd": _size,
            "n_head": _size,
            "n_layer": _size,
            "block_size": _size,
            "chars": st.one_of(st.just(list("abcé")), st.lists(st.text(max_size=2), max_size=6), _json),
            "special_tokens": st.one_of(st.none(), st.just(["user", "assistant", "end_turn"]), _json),
        },
    ),
    extra=st.dictionaries(st.text(max_size=6), _json, max_size=2),
)
def test_fuzz_meta_json_loads_or_raises_data_error(tmp_path, fields, extra):
    params, cfg, tok = _model()
    save_model(tmp_path, params, cfg, tok)
    (tmp_path / "meta.json").write_text(json.dumps({**extra, **fields}))
    try:
        p, c, t = load_model(tmp_path)
    except JaxsysError:
        return
    assert c.vocab_size == t.vocab_size and set(p) == set(expected_shapes(c))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_weights_json_loads_or_raises_data_error(tmp_path, data):
    params, cfg, tok = _model()
    save_model(tmp_path, params, cfg, tok)
    w = json.loads((tmp_path / "weights.json").read_text())
    name = data.draw(st.sampled_from(sorted(w)))
    how = data.draw(st.sampled_from(["value", "row", "matrix", "key", "bytes"]))
    if how == "value":
        w[name][0][0] = data.draw(_json)
    elif how == "row":
        w[name][data.draw(st.integers(0, len(w[name]) - 1))] = data.draw(_json)
    elif how == "matrix":
        w[name] = data.draw(_json)
    elif how == "key":
        w[data.draw(st.text(max_size=12))] = w.pop(name)
    text = json.dumps(w)
    if how == "bytes":  # a cut or a flipped character in the text
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + data.draw(st.sampled_from(["", "]", "{", "9" * 80, "\x00", '"'])) + text[i + 1 :]
    (tmp_path / "weights.json").write_text(text)
    try:
        p, c, _ = load_model(tmp_path)
    except JaxsysError:
        return
    assert all(p[k].shape == s and np.isfinite(p[k]).all() for k, s in expected_shapes(c).items())
