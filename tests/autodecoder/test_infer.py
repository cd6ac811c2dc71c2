"""Latent inference with a frozen decoder; interpolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.autodecoder import infer, recon
from jaxsys.autodecoder import model as M
from jaxsys.autodecoder.shapes import register_shape
from jaxsys.autodecoder.train import init_state
from jaxsys.errors import ConfigError, ShapeError


def test_infer_latent_fits_and_keeps_decoder(tiny):
    """A 'shape' whose SDF is the decoder's own output at a hidden latent z*: inference must drive
    the loss to ~0 (the target is exactly representable)."""
    st = init_state(jax.random.key(0), tiny)
    params = st.params
    before = jax.tree_util.tree_map(np.array, params)
    z_star = 2.0 * jax.random.normal(jax.random.PRNGKey(7), (tiny.model.latent_dim,), jnp.float32)
    beta = tiny.sampler.beta
    register_shape("decoder_made", lambda p: beta * M.predict(params, z_star, M.encode(p, tiny.model)), overwrite=True)
    field = np.asarray(recon.render_rows(params, z_star, tiny.model, 16))
    assert np.max(np.abs(field)) < 1  # not clipped, so the target equals the decoder output
    icfg = infer.InferConfig(steps=150, batch_size=128, lr=5e-2, lambda_z=0.0)
    z, losses = infer.infer_latent(params, tiny.model, "decoder_made", icfg, tiny.sampler)
    assert z.shape == (tiny.model.latent_dim,)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < 0.05 * losses[:3].mean()
    fit = np.asarray(recon.render_rows(params, z, tiny.model, 16))
    assert np.sqrt(np.mean((fit - field) ** 2)) < 0.25 * np.sqrt(np.mean(field**2))
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(st.params)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_interpolation_endpoints(tiny):
    st = init_state(jax.random.key(0), tiny)
    Z = 0.5 * jax.random.normal(jax.random.PRNGKey(2), (2, tiny.model.latent_dim), jnp.float32)
    imgs = np.asarray(infer.interpolate(st.params, Z[0], Z[1], tiny.model, n=3, res=16))
    np.testing.assert_allclose(imgs[0], recon.render_rows(st.params, Z[0], tiny.model, 16), atol=1e-6)
    np.testing.assert_allclose(imgs[2], recon.render_rows(st.params, Z[1], tiny.model, 16), atol=1e-6)
    assert not np.allclose(imgs[1], imgs[0])


def test_bad_input(tiny):
    st = init_state(jax.random.key(0), tiny)
    with pytest.raises(ConfigError, match="unknown shape"):
        infer.infer_latent(st.params, tiny.model, "blob")
    with pytest.raises(ConfigError, match="steps"):
        infer.infer_latent(st.params, tiny.model, "circle", infer.InferConfig(steps=0))
    with pytest.raises(ShapeError):
        infer.interpolate(st.params, jnp.zeros(3), jnp.zeros(3), tiny.model)
