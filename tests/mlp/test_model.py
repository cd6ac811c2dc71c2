"""MLP forward/backward: jax.grad, finite differences, the derivation's 2-hidden version, a separately
written per-sample numpy loop, and literal hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, DataError, ShapeError
from jaxsys.mlp import model
from jaxsys.nn import gradcheck

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


def _problem(sizes, task, batch=5, seed=0):
    """float64 params with non-zero biases, inputs and targets, drawn with numpy (no per-op compiles)."""
    cfg = model.MLPConfig(sizes, task)
    rng = np.random.default_rng(seed)
    params = [
        {"w": jnp.asarray(rng.normal(size=(o, i)) * np.sqrt(2.0 / i)), "b": jnp.asarray(0.3 * rng.normal(size=o))}
        for i, o in zip(sizes[:-1], sizes[1:])
    ]
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])))
    if task == "classify":
        y = jnp.asarray(rng.integers(0, sizes[-1], size=batch))
    else:
        y = jnp.asarray(rng.normal(size=(batch, sizes[-1])))
    return cfg, params, x, y


CASES = [((4, 5, 3, 3), "classify"), ((4, 5, 3, 2), "regress"), ((3, 2), "classify"), ((6, 5, 4, 4, 3), "regress")]


@pytest.mark.parametrize("sizes,task", CASES)
def test_hand_grad_vs_jax_grad_and_finite_differences(sizes, task):
    cfg, params, x, y = _problem(sizes, task)
    loss = jax.jit(lambda p: model.loss_fn(p, x, y, cfg))
    hand = gradcheck.check_grad(loss, jax.jit(lambda p: model.hand_grad(p, x, y, cfg)), params, atol=1e-13, rtol=1e-11)
    if len(sizes) == 4:  # the derivation's 2-hidden-layer case (the harness is slowish eagerly)
        gradcheck.check_finite_differences(loss, hand, params, num_directions=2)


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_backward_returns_dx_like_vjp(task):
    cfg, params, x, _ = _problem((4, 5, 3, 3), task)
    gradcheck.check_vjp(
        lambda p, x_: model.forward(p, x_, cfg),
        lambda p, c, d: model.backward(p, c, d, cfg, need_dx=True),
        params,
        x,
        atol=1e-13,
        rtol=1e-11,
    )


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_2hidden_symbol_for_symbol_matches_general(task):
    cfg, params, x, y = _problem((4, 6, 5, 3), task)
    with jax.numpy_rank_promotion("raise"):  # no silent broadcasting in the derivation's code
        z3, c2 = model.forward_2hidden(params, x)
        _, lc = model.loss_forward(z3, y, cfg)
        g2 = model.backward_2hidden(params, c2, model.loss_backward(lc, cfg))
    out, _ = model.forward(params, x, cfg)
    np.testing.assert_allclose(z3, out, rtol=1e-14)
    g = model.hand_grad(params, x, y, cfg)
    for a, b in zip(jax.tree_util.tree_leaves(g2), jax.tree_util.tree_leaves(g)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def _numpy_loop_reference(W, b, X, Y, task):
    """Per-sample, per-unit scalar loops: loss and gradients of the mean loss over the batch."""
    L, B = len(W), X.shape[0]
    gW = [np.zeros_like(w) for w in W]
    gb = [np.zeros_like(v) for v in b]
    loss = 0.0
    for n in range(B):
        acts, zs = [X[n]], []
        for l in range(L):
            a_prev = acts[-1]
            z = np.zeros(W[l].shape[0])
            for o in range(W[l].shape[0]):
                s = b[l][o]
                for i in range(W[l].shape[1]):
                    s += W[l][o, i] * a_prev[i]
                z[o] = s
            zs.append(z)
            acts.append(np.array([max(v, 0.0) for v in z]) if l < L - 1 else z)
        out = acts[-1]
        if task == "classify":
            m = max(out)
            e = np.array([np.exp(v - m) for v in out])
            p = e / e.sum()
            loss += -np.log(p[Y[n]])
            delta = p.copy()
            delta[Y[n]] -= 1.0
        else:
            delta = out - Y[n]
            loss += 0.5 * sum(d * d for d in delta)
        delta = delta / B
        for l in reversed(range(L)):
            for o in range(W[l].shape[0]):
                gb[l][o] += delta[o]
                for i in range(W[l].shape[1]):
                    gW[l][o, i] += delta[o] * acts[l][i]
            if l > 0:
                da = np.array([sum(W[l][o, i] * delta[o] for o in range(W[l].shape[0])) for i in range(W[l].shape[1])])
                delta = np.array([d if z > 0 else 0.0 for d, z in zip(da, zs[l - 1])])
    return loss / B, gW, gb


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_tiny_fixed_example_vs_numpy_loop(task):
    # fixed values (no RNG): sizes 3-4-3-2, batch 3
    W1 = np.array([[0.2, -0.5, 1.0], [0.7, 0.1, -0.3], [-0.4, 0.9, 0.25], [0.05, -0.6, 0.8]])
    b1 = np.array([0.1, -0.2, 0.05, 0.3])
    W2 = np.array([[0.5, -1.0, 0.3, 0.2], [-0.7, 0.4, 0.9, -0.1], [0.6, 0.6, -0.5, 0.35]])
    b2 = np.array([-0.1, 0.2, 0.15])
    W3 = np.array([[1.1, -0.4, 0.3], [-0.2, 0.8, -0.9]])
    b3 = np.array([0.05, -0.05])
    X = np.array([[1.0, 2.0, -1.0], [0.5, -1.5, 0.3], [-0.8, 0.2, 1.2]])
    Y = np.array([1, 0, 1]) if task == "classify" else np.array([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.7]])
    ref_loss, ref_gW, ref_gb = _numpy_loop_reference([W1, W2, W3], [b1, b2, b3], X, Y, task)

    cfg = model.MLPConfig((3, 4, 3, 2), task)
    params = [{"w": jnp.asarray(w), "b": jnp.asarray(v)} for w, v in zip([W1, W2, W3], [b1, b2, b3])]
    (loss, _), grads = model.loss_and_grad(params, jnp.asarray(X), jnp.asarray(Y), cfg)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    for l in range(3):
        np.testing.assert_allclose(grads[l]["w"], ref_gW[l], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grads[l]["b"], ref_gb[l], rtol=1e-12, atol=1e-15)


def test_scalar_chain_literal_values():
    # 1-1-1-1 network, x = 1, y = 1, worked out by hand:
    # z1 = 2*1 - 0.5 = 1.5, a1 = 1.5; z2 = -1*1.5 + 2 = 0.5, a2 = 0.5; z3 = 3*0.5 + 1 = 2.5
    # L = 0.5 (2.5 - 1)^2 = 1.125; dZ3 = 1.5; dW3 = 1.5*0.5 = 0.75; db3 = 1.5; dA2 = 4.5 = dZ2;
    # dW2 = 4.5*1.5 = 6.75; db2 = 4.5; dA1 = 4.5*(-1) = -4.5 = dZ1; dW1 = -4.5*1; db1 = -4.5
    cfg = model.MLPConfig((1, 1, 1, 1), "regress")
    params = [
        {"w": jnp.array([[2.0]]), "b": jnp.array([-0.5])},
        {"w": jnp.array([[-1.0]]), "b": jnp.array([2.0])},
        {"w": jnp.array([[3.0]]), "b": jnp.array([1.0])},
    ]
    (loss, out), g = model.loss_and_grad(params, jnp.array([[1.0]]), jnp.array([[1.0]]), cfg)
    assert float(out[0, 0]) == 2.5 and float(loss) == 1.125
    got = [(float(p["w"][0, 0]), float(p["b"][0])) for p in g]
    assert got == [(-4.5, -4.5), (6.75, 4.5), (0.75, 1.5)]


def test_pallas_matmul_switch_matches_xla():
    cfg, params, x, y = _problem((5, 7, 6, 3), "classify", batch=4)
    cfg_p = model.MLPConfig(cfg.sizes, cfg.task, matmul="pallas")
    f = jax.jit(model.loss_and_grad, static_argnames="cfg")
    (lx, _), gx = f(params, x, y, cfg=cfg)
    (lp, _), gp = f(params, x, y, cfg=cfg_p)
    np.testing.assert_allclose(lp, lx, rtol=1e-13)
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gx)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_predict_and_counts():
    cfg, params, x, _ = _problem((4, 5, 3, 3), "classify")
    pred = model.predict(params, x, cfg)
    out, _ = model.forward(params, x, cfg)
    np.testing.assert_array_equal(pred, np.argmax(np.asarray(out), axis=1))
    assert model.num_params(cfg) == sum(p.size for p in jax.tree_util.tree_leaves(params))
    # 784-512-512-10 at B=64: 3 forward, 3 dW, 2 dA matmuls
    big = model.MLPConfig((784, 512, 512, 10))
    assert model.flops_per_step(big, 64) == 2 * 64 * (2 * (784 * 512 + 512 * 512 + 5120) + 512 * 512 + 5120)


# ---- bad input ---------------------------------------------------------------------------------


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        model.MLPConfig((4, 3, 2), activation="swish")
    with pytest.raises(ConfigError, match="task"):
        model.MLPConfig((4, 3, 2), task="rank")
    with pytest.raises(ConfigError, match="sizes"):
        model.MLPConfig((4,))
    with pytest.raises(ConfigError, match="sizes"):
        model.MLPConfig((4, 0, 2))
    with pytest.raises(ConfigError, match="matmul"):
        model.MLPConfig((4, 2), matmul="cublas")


def test_validate_batch_errors():
    c = model.MLPConfig((4, 3, 2), "classify")
    r = model.MLPConfig((4, 3, 2), "regress")
    x = np.zeros((5, 4), np.float32)
    model.validate_batch(x, np.zeros(5, np.int32), c)
    model.validate_batch(x, np.zeros((5, 2), np.float32), r)
    with pytest.raises(ShapeError, match=r"inputs must be \[B x 4\], got \[5, 3\]"):
        model.validate_batch(np.zeros((5, 3)), np.zeros(5, np.int32), c)
    with pytest.raises(ShapeError, match="labels must be"):
        model.validate_batch(x, np.zeros(4, np.int32), c)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        model.validate_batch(x, np.array([0, 1, 2, 0, 0]), c)
    with pytest.raises(DataError, match="NaN"):
        model.validate_batch(x, np.array([0, 1, np.nan, 0, 0]), c)
    with pytest.raises(ShapeError, match=r"targets must be \[B x 2\]"):
        model.validate_batch(x, np.zeros((5, 1)), r)
    y = np.zeros((5, 2))
    y[3, 1] = np.nan
    with pytest.raises(DataError, match="1 NaN/inf"):
        model.validate_batch(x, y, r)
    xb = x.copy()
    xb[0, 0] = np.inf
    with pytest.raises(DataError, match="inputs contain NaN or inf"):
        model.validate_batch(xb, np.zeros(5, np.int32), c)


def test_validate_params_errors():
    cfg = model.MLPConfig((4, 3, 2))
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    model.validate_params(params, cfg)
    with pytest.raises(ShapeError, match="list of 2 layers"):
        model.validate_params(params[:1], cfg)
    bad = [dict(params[0]), params[1]]
    bad[0]["w"] = bad[0]["w"].T
    with pytest.raises(ShapeError, match=r"params\[0\]: expected w \[3 x 4\]"):
        model.validate_params(bad, cfg)
