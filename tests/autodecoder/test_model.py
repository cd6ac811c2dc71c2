"""Per-sample hand gradient vs jax.grad and finite differences; batched backward vs jax.vjp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.autodecoder import model as M
from jaxsys.errors import ConfigError, ShapeError
from jaxsys.nn.gradcheck import check_grad, check_vjp

pytestmark = pytest.mark.x64  # float64: compared with float64 references at tight tolerances

jax.config.update("jax_enable_x64", True)
CFG = M.ModelConfig(latent_dim=5, num_freqs=3, hidden=(9, 7, 6), dtype="float64")


def _inputs(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = M.init_params(k[0], CFG)
    z = 0.3 * jax.random.normal(k[1], (CFG.latent_dim,), jnp.float64)
    p = jax.random.uniform(k[2], (2,), jnp.float64, -1.2, 1.2)
    return params, z, M.encode(p, CFG), jnp.float64(0.37)


def test_sample_grad_matches_jax_grad():
    lambda_w = 0.01
    params, z, enc, t = _inputs()
    lam_z = 0.05

    def loss(tree):
        return M.sample_loss(tree["p"], tree["z"], tree["u"], t, lam_z, lambda_w)

    def hand(tree):
        dP, dz, du, _ = M.sample_grad(tree["p"], tree["z"], tree["u"], t, lam_z, lambda_w)
        # d/d enc is du[d:]; d/dz adds lambda_z z to du[:d]
        return {"p": dP, "z": dz, "u": du[CFG.latent_dim :]}

    tree = {"p": params, "z": z, "u": enc}
    loss, hand = jax.jit(loss), jax.jit(hand)
    check_grad(loss, hand, tree, atol=1e-12, rtol=1e-10)
    # dL/du is the gradient w.r.t. the whole MLP input [z | enc]
    _, _, du, l = M.sample_grad(params, z, enc, t, lam_z, lambda_w)
    ref = jax.grad(lambda u: M.forward(params, u)[0])(jnp.concatenate([z, enc]))
    y = M.forward(params, jnp.concatenate([z, enc]))[0]
    np.testing.assert_allclose(du, (y - t) * ref, atol=1e-13)
    np.testing.assert_allclose(l, loss(tree), atol=1e-14)


def test_batched_backward_vjp():
    params, *_ = _inputs(1)
    u = jax.random.normal(jax.random.PRNGKey(5), (11, CFG.in_dim), jnp.float64)
    check_vjp(jax.jit(M.forward), jax.jit(M.backward), params, u)


def test_init_scales_and_layout():
    cfg = M.ModelConfig()
    params = M.init_params(jax.random.PRNGKey(0), cfg)
    assert [W.shape for W in params["W"]] == [(64, 42), (64, 64), (64, 64), (1, 64)]
    assert params["W"][0].dtype == jnp.float32
    np.testing.assert_allclose(float(jnp.std(params["W"][1])), 1 / 8, rtol=0.1)
    np.testing.assert_allclose(float(jnp.std(params["W"][3])), 0.5 / 8, rtol=0.35)
    Z = M.init_latents(jax.random.PRNGKey(1), 3, cfg)
    assert Z.shape == (3, 16) and float(jnp.std(Z)) < 0.02
    # encoding layout [x, y, sin 2pi x, cos 2pi x, sin 2pi y, cos 2pi y, sin 4pi x, ...]
    e = np.asarray(M.encode(jnp.array([0.1, 0.3]), cfg))
    np.testing.assert_allclose(
        e[:6], [0.1, 0.3, np.sin(0.2 * np.pi), np.cos(0.2 * np.pi), np.sin(0.6 * np.pi), np.cos(0.6 * np.pi)], atol=1e-6
    )
    np.testing.assert_allclose(e[6], np.sin(0.4 * np.pi), atol=1e-6)


def test_bad_inputs():
    params = M.init_params(jax.random.PRNGKey(0), CFG)
    with pytest.raises(ShapeError, match="latent dim mismatch"):
        M.check_params(params, jnp.zeros((3, CFG.latent_dim + 1)), CFG)
    other = M.init_params(jax.random.PRNGKey(0), M.ModelConfig(latent_dim=5, num_freqs=3, hidden=(9, 8, 6)))
    with pytest.raises(ShapeError, match="layer 1"):
        M.check_params(other, jnp.zeros((3, 5)), CFG)
    with pytest.raises(ConfigError, match="hidden"):
        M.ModelConfig(hidden=())
    with pytest.raises(ConfigError, match="dtype"):
        M.ModelConfig(dtype="float16")
