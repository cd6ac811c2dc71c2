"""Hand Adam: against a literal scalar computation of the paper's rule, and against optax.adam over
100 training steps of the MLP in float64."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsys.errors import ConfigError
from jaxsys.mlp import adam as adam_lib
from jaxsys.mlp import model
from jaxsys.mlp.adam import AdamConfig
from jaxsys.mlp.train import StepConfig, TrainState, train_step

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


def test_hand_adam_scalar_reference():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    opt = adam_lib.adam(lr, b1, b2, eps)
    p = {"x": jnp.array([1.0, -2.0])}
    state = opt.init(p)
    grads = [np.array([0.5, -1.0]), np.array([0.25, 3.0]), np.array([-1.0, 0.0])]
    m = np.zeros(2)
    v = np.zeros(2)
    x = np.array([1.0, -2.0])
    for t, g in enumerate(grads, start=1):  # Kingma & Ba, Algorithm 1, written out with numpy
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        if t == 1:  # first step: m^ = g, v^ = g^2, so each coordinate moves by lr against sign(g)
            np.testing.assert_allclose(x, [1.0 - lr, -2.0 + lr], rtol=1e-7)
        u, state = opt.update({"x": jnp.asarray(g)}, state, p)
        p = optax.apply_updates(p, u)
        np.testing.assert_allclose(p["x"], x, rtol=1e-14, atol=1e-15)
    assert int(state.count) == 3


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_hand_adam_matches_optax_over_100_mlp_steps(task):
    rng = np.random.default_rng(0)
    sizes = (6, 8, 7, 3 if task == "classify" else 2)
    mcfg = model.MLPConfig(sizes, task)
    params = model.init_params(jax.random.PRNGKey(0), mcfg, jnp.float64)
    xs = rng.normal(size=(100, 16, sizes[0]))
    ys = rng.integers(0, sizes[-1], size=(100, 16)) if task == "classify" else rng.normal(size=(100, 16, sizes[-1]))
    finals = {}
    for kind in ("hand", "optax"):
        cfg = StepConfig(mcfg, AdamConfig(kind, learning_rate=3e-3), "hand")
        p = jax.tree_util.tree_map(jnp.copy, params)
        state = TrainState(jnp.zeros([], jnp.int32), p, adam_lib.make_optimizer(cfg.adam).init(p))
        for t in range(100):
            state, _ = train_step(state, jnp.asarray(xs[t]), jnp.asarray(ys[t]), cfg=cfg)
        finals[kind] = state
    assert int(finals["hand"].step) == int(finals["optax"].step) == 100
    assert int(finals["hand"].opt_state.count) == int(finals["optax"].opt_state[0].count) == 100
    chex.assert_trees_all_close(finals["hand"].params, finals["optax"].params, atol=1e-12, rtol=0)
    chex.assert_trees_all_close(finals["hand"].opt_state.mu, finals["optax"].opt_state[0].mu, atol=1e-12, rtol=0)
    chex.assert_trees_all_close(finals["hand"].opt_state.nu, finals["optax"].opt_state[0].nu, atol=1e-12, rtol=0)
    # the trajectory really moved (a test that cannot pass on a no-op optimizer)
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree_util.tree_leaves(finals["hand"].params), jax.tree_util.tree_leaves(params))
    )
    assert moved > 0.05


def test_adam_config_errors():
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        AdamConfig("sgd")
    with pytest.raises(ConfigError, match="learning_rate"):
        AdamConfig(learning_rate=0.0)
    with pytest.raises(ConfigError, match="decays"):
        AdamConfig(b1=1.0)
