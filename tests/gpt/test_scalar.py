import math

import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.gpt.scalar import Gpt, Value

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


def test_value_ops_and_grads():
    a, b = Value(2.0), Value(-3.0)
    y = (a * b + a**2 - b / a + (a - 1.0).exp() + (a * 3).log() + b.relu() + a.relu()) * 2
    y.backward()
    # dy/da = 2 (b + 2a + b/a^2 + e^(a-1) + 1/a + 1), dy/db = 2 (a - 1/a + 0)
    np.testing.assert_allclose(a.grad, 2 * (-3 + 4 - 3 / 4 + math.e + 0.5 + 1), rtol=1e-14)
    np.testing.assert_allclose(b.grad, 2 * (2 - 0.5), rtol=1e-14)
    ref = (2 * -3 + 4 + 1.5 + math.e + math.log(6) + 0 + 2) * 2
    np.testing.assert_allclose(y.data, ref, rtol=1e-14)


def test_shared_node_accumulates_and_deep_graph():
    x = Value(1.5)
    y = x * x * x  # 3 x^2
    y.backward()
    assert abs(x.grad - 3 * 1.5**2) < 1e-12
    z = Value(0.0)
    s = z
    for _ in range(20000):  # far beyond the recursion limit: the topological sort is iterative
        s = s + z
    s.backward()
    assert z.grad == 20001.0


def test_value_finite_differences():
    def f(u):
        v = Value(u)
        return ((v * v + 1.0).log() * v.exp() - 1.0 / (v + 3.0)), v

    out, v = f(0.7)
    out.backward()
    h = 1e-6
    fd = (f(0.7 + h)[0].data - f(0.7 - h)[0].data) / (2 * h)
    np.testing.assert_allclose(v.grad, fd, rtol=1e-8)


def _tiny_params(rng, v=5, e=4, layers=1, block=4):
    p = {
        "wte": rng.normal(0, 0.5, (v, e)),
        "wpe": rng.normal(0, 0.5, (block, e)),
        "lm_head": rng.normal(0, 0.5, (v, e)),
    }
    for i in range(layers):
        for m, s in (
            ("attn_wq", (e, e)),
            ("attn_wk", (e, e)),
            ("attn_wv", (e, e)),
            ("attn_wo", (e, e)),
            ("mlp_fc1", (4 * e, e)),
            ("mlp_fc2", (e, 4 * e)),
        ):
            p[f"layer{i}.{m}"] = rng.normal(0, 0.5, s)
    return p


def test_scalar_gpt_first_position_by_hand():
    # At position 0 attention returns v_0 (softmax over one key), so the block is plain algebra.
    rng = np.random.default_rng(0)
    p = _tiny_params(rng)
    g = Gpt(p, n_layer=1, n_head=2)
    rms = lambda x: x / np.sqrt(np.mean(x * x) + 1e-5)
    x = rms(p["wte"][3] + p["wpe"][0])
    x = x + p["layer0.attn_wo"] @ (p["layer0.attn_wv"] @ rms(x))
    x = x + p["layer0.mlp_fc2"] @ np.maximum(p["layer0.mlp_fc1"] @ rms(x), 0)
    np.testing.assert_allclose(g.logits_numpy([[3]])[0, 0], p["lm_head"] @ x, rtol=1e-13)


def test_scalar_loss_mask_and_grads_finite_difference():
    rng = np.random.default_rng(1)
    p = _tiny_params(rng)
    tokens, targets = np.array([[0, 1, 2], [3, 4, 0]]), np.array([[1, 2, 3], [4, 0, 1]])
    mask = np.array([[1, 1, 0], [0, 0, 0]])
    g = Gpt(p, 1, 2)
    loss, grads = g.loss_and_grads(tokens, targets, mask)
    # masked-out positions and the fully masked row are ignored: same as the 2-token sequence alone
    g2 = Gpt(p, 1, 2)
    loss2, grads2 = g2.loss_and_grads(tokens[:1, :2], targets[:1, :2])
    assert abs(loss - loss2) < 1e-14
    assert np.all(grads["wte"][4] == 0) and np.all(grads["wpe"][2:] == 0)
    for k in p:
        np.testing.assert_allclose(grads[k], grads2[k], atol=1e-15)
    # central difference on one entry of attn_wq
    h = 1e-6
    pp, pm = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
    pp["layer0.attn_wq"][1, 2] += h
    pm["layer0.attn_wq"][1, 2] -= h
    fd = (Gpt(pp, 1, 2).loss(tokens, targets, mask).data - Gpt(pm, 1, 2).loss(tokens, targets, mask).data) / (2 * h)
    np.testing.assert_allclose(grads["layer0.attn_wq"][1, 2], fd, rtol=1e-6, atol=1e-10)


def test_scalar_adam_step_closed_form():
    rng = np.random.default_rng(2)
    p = _tiny_params(rng, v=3, e=2)
    g = Gpt(p, 1, 1)
    before = g.params_numpy()
    g.loss_and_grads(np.array([[0, 1]]), np.array([[1, 2]]))
    grads = g.grads()
    g.adam_step(0, 10)
    after = g.params_numpy()
    # step 0: m^ = g, v^ = g^2, so the update is lr * g / (|g| + eps)
    for k in p:
        ref = before[k] - 0.01 * grads[k] / (np.abs(grads[k]) + 1e-8)
        np.testing.assert_allclose(after[k], ref, rtol=1e-12, atol=1e-15)


def test_scalar_errors():
    p = _tiny_params(np.random.default_rng(3), block=2)
    with pytest.raises(ConfigError, match="block_size=2"):
        Gpt(p, 1, 2).sequence_logits([0, 1, 2])
    with pytest.raises(ConfigError, match="not divisible"):
        Gpt(p, 1, 3)
