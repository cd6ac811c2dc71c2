import json

import numpy as np
import pytest

from jaxsys.errors import DataError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.gpt.weights_io import expected_shapes, load_model, load_safetensors, save_model, save_safetensors

pytestmark = pytest.mark.x64  # float64 until this module is checked in float32


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
    with pytest.raises(DataError, match="meta.json: not valid UTF-8"):
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
