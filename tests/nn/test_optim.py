"""jaxsys.nn.optim.adam: equals optax.adam to 1e-12 in float64, with a constant lr and a schedule."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsys.nn.optim import adam

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


def _run(opt, params, grads_seq):
    state = opt.init(params)
    for g in grads_seq:
        upd, state = opt.update(g, state, params)
        params = optax.apply_updates(params, upd)
    return params


@pytest.mark.parametrize("lr", [1e-2, optax.linear_schedule(1e-2, 0.0, 20)])
def test_adam_matches_optax(lr):
    key = jax.random.PRNGKey(0)
    params = {"w": jax.random.normal(key, (3, 4), jnp.float64), "b": jnp.zeros(4, jnp.float64)}
    grads = [jax.tree_util.tree_map(lambda p, i=i: jnp.sin(p + i) + 0.1 * i, params) for i in range(20)]
    hand = _run(adam(lr, b1=0.85, b2=0.99, eps=1e-8), params, grads)
    ref = _run(optax.adam(lr, b1=0.85, b2=0.99, eps=1e-8), params, grads)
    chex.assert_trees_all_close(hand, ref, atol=1e-12, rtol=1e-12)


def test_adam_first_step_reference_value():
    # t = 1: m^ = g, v^ = g^2, update = -lr g / (|g| + eps) = -lr sign(g) (up to eps)
    p = {"x": jnp.array([1.0, -2.0])}
    g = {"x": jnp.array([0.5, -4.0])}
    opt = adam(0.1, eps=0.0)
    upd, _ = opt.update(g, opt.init(p))
    np.testing.assert_allclose(upd["x"], [-0.1, 0.1], rtol=1e-12)
