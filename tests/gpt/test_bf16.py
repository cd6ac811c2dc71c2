"""bfloat16 parameter matmuls (matmul_dtype="bfloat16"): close to float32, hand == jax.grad."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.gpt import model
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.train import TrainConfig, init_state, train_step

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

CFG = GPTConfig(vocab_size=11, n_embd=16, n_head=4, n_layer=2, block_size=16)
RNG = np.random.default_rng(3)
TOKENS = RNG.integers(0, 11, (2, 12))
TARGETS = RNG.integers(0, 11, (2, 12))
MASK = np.ones((2, 12), np.float32)
MASK[1, 9:] = 0


@pytest.fixture(scope="module")
def params32():
    return model.init_params(jax.random.PRNGKey(1), CFG, jnp.float32)


@pytest.fixture(scope="module")
def results(params32):
    out = {}
    for mode in ("hand", "autodiff"):
        for md in ("float32", "bfloat16"):
            loss, g = model.loss_and_grads(params32, TOKENS, TARGETS, MASK, CFG, mode=mode, matmul_dtype=md)
            out[mode, md] = (float(loss), {k: np.asarray(v) for k, v in g.items()})
    return out


def _bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_linear_rounds_operands_and_accumulates_in_float32():
    u = RNG.normal(size=(3, 5, 24)).astype(np.float32)
    w = RNG.normal(size=(7, 24)).astype(np.float32)
    y = np.asarray(model.linear(jnp.asarray(u), jnp.asarray(w), "bfloat16"))
    assert y.dtype == np.float32
    ref = np.einsum("bti,oi->bto", _bf16(u), _bf16(w))  # numpy float64 on the rounded operands
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    exact = np.einsum("bti,oi->bto", u.astype(np.float64), w.astype(np.float64))
    assert np.max(np.abs(y - exact)) > 1e-3  # the rounding did happen
    dy = RNG.normal(size=(3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(
        model.linear_dx(jnp.asarray(dy), jnp.asarray(w), "bfloat16"),
        np.einsum("bto,oi->bti", _bf16(dy), _bf16(w)),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        model.linear_dw(jnp.asarray(dy), jnp.asarray(u), "bfloat16"),
        np.einsum("bto,bti->oi", _bf16(dy), _bf16(u)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bf16_loss_and_grads_close_to_float32(results):
    l32, g32 = results["hand", "float32"]
    l16, g16 = results["hand", "bfloat16"]
    assert 0 < abs(l16 - l32) <= 2e-3 * abs(l32)
    # bf16 keeps ~3 significant digits per operand; gradients at init are sums of many terms of
    # either sign, so per-parameter relative errors reach a few percent (measured 0.3-12%) while
    # the whole gradient vector stays within 2% and points the same way.
    flat32 = np.concatenate([g32[k].ravel() for k in g32])
    flat16 = np.concatenate([g16[k].ravel() for k in g32])
    assert np.linalg.norm(flat16 - flat32) / np.linalg.norm(flat32) < 2e-2
    for k in g32:
        assert g16[k].dtype == np.float32
        rel = np.linalg.norm(g16[k] - g32[k]) / np.linalg.norm(g32[k])
        assert 0 < rel < 0.25, (k, rel)


def test_hand_bf16_grads_equal_jax_grad_of_bf16_forward(results):
    lh, gh = results["hand", "bfloat16"]
    la, ga = results["autodiff", "bfloat16"]
    assert abs(lh - la) <= 1e-6 * abs(la)
    for k in gh:
        scale = np.max(np.abs(ga[k]))
        np.testing.assert_allclose(gh[k], ga[k], rtol=1e-4, atol=1e-5 * scale, err_msg=k)


def test_train_step_bf16_keeps_float32_master_weights():
    step_cfg = TrainConfig(steps=3, batch_size=2, matmul_dtype="bfloat16").step_config(CFG)
    state = init_state(jax.random.key(0), step_cfg)
    w0 = np.asarray(state.params["layer0.mlp_fc1"])
    state, loss = train_step(state, jnp.asarray(TOKENS), jnp.asarray(TARGETS), jnp.asarray(MASK), cfg=step_cfg)
    assert state.params["layer0.mlp_fc1"].dtype == jnp.float32
    assert np.isfinite(float(loss))
    assert not np.array_equal(np.asarray(state.params["layer0.mlp_fc1"]), w0)


def test_unknown_matmul_dtype_rejected(params32):
    with pytest.raises(ConfigError, match="matmul_dtype"):
        TrainConfig(matmul_dtype="float16")
    with pytest.raises(ConfigError, match="matmul_dtype"):
        model.loss_and_grads(params32, TOKENS, TARGETS, MASK, CFG, matmul_dtype="int8")


def test_cli_matmul_dtype(tmp_path):
    from jaxsys.cli import main
    from jaxsys.gpt.weights_io import load_model

    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\nmia\nluna\nzoe\nnora\nlily\n", encoding="utf-8")
    out = tmp_path / "m"
    assert (
        main(
            [
                "gpt",
                "train",
                "--data",
                str(data),
                "--steps",
                "2",
                "--run-dir",
                str(out),
                "--n-embd",
                "8",
                "--n-head",
                "2",
                "--n-layer",
                "1",
                "--batch",
                "4",
                "--no-progress",
                "--matmul-dtype",
                "bfloat16",
            ]
        )
        == 0
    )
    assert json.loads((out / "train_summary.json").read_text())["matmul_dtype"] == "bfloat16"
    params, cfg, _ = load_model(out)  # weights.json/meta.json unchanged: float32 master weights
    assert "matmul_dtype" not in json.loads((out / "meta.json").read_text())
    assert all(np.isfinite(v).all() for v in params.values())


def test_attention_bf16_close_to_float32():
    from jaxsys.nn.attention import attention_backward, attention_forward

    r = np.random.default_rng(5)
    q, k, v, do = (jnp.asarray(r.normal(size=(2, 24, 2, 8)), jnp.float32) for _ in range(4))
    o32, c32 = attention_forward(q, k, v, 8)
    o16, c16 = attention_forward(q, k, v, 8, matmul_dtype="bfloat16")
    assert o16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(o16 - o32) / jnp.linalg.norm(o32))
    assert 0 < rel < 2e-2
    for g32, g16 in zip(attention_backward(c32, do), attention_backward(c16, do, "bfloat16")):
        rel = float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32))
        assert 0 < rel < 3e-2
