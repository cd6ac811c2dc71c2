"""Row-batched / whole-image vs per-pixel reconstruction; masks and metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder import recon
from jaxsys.errors import ConfigError, ShapeError

pytestmark = pytest.mark.x64  # float64: compared with float64 references at tight tolerances


def test_row_batched_matches_per_pixel_float32():
    cfg = M.ModelConfig()  # the default 64x64x64 net, float32
    params = M.init_params(jax.random.PRNGKey(0), cfg)
    z = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (cfg.latent_dim,), jnp.float32)
    rows = np.asarray(recon.render_rows(params, z, cfg, 32))
    whole = np.asarray(recon.render_image(params, z, cfg, 32))
    pix = np.asarray(recon.render_pixels(params, z, cfg, 32))
    assert rows.dtype == np.float32 and rows.shape == (32, 32)
    assert np.max(np.abs(rows - pix)) < 1e-6
    assert np.max(np.abs(whole - pix)) < 1e-6
    # and against an independent float64 numpy evaluation of the same network
    a = np.linspace(-1.2, 1.2, 32)
    X, Y = np.meshgrid(a, a, indexing="xy")
    enc = [X, Y]
    for k in range(cfg.num_freqs):
        w = 2.0**k * 2 * np.pi
        enc += [np.sin(w * X), np.cos(w * X), np.sin(w * Y), np.cos(w * Y)]
    u = np.concatenate([np.broadcast_to(np.asarray(z, np.float64), (32, 32, cfg.latent_dim)), np.stack(enc, -1)], -1)
    h = u
    for l, (W, b) in enumerate(zip(params["W"], params["b"])):
        h = h @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
        if l < len(params["W"]) - 1:
            h = np.tanh(h)
    assert np.max(np.abs(rows - h[..., 0])) < 1e-4


def test_metrics_on_analytic_fields():
    true = np.asarray(recon.analytic("circle", 128, jnp.float64))
    assert recon.iou(true, true) == 1.0
    assert recon.contour_abs_sdf(true, "circle") < 1e-3  # linear interpolation error only
    # circle of radius 0.5 vs 0.6: IoU = 0.25 / 0.36 (up to pixelisation)
    smaller = true + 0.1
    assert recon.iou(smaller, true) == pytest.approx(0.25 / 0.36, abs=0.02)
    assert recon.contour_abs_sdf(smaller, "circle") == pytest.approx(0.1, abs=2e-3)
    pts = recon.zero_crossings(true)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 0.6, atol=2e-3)
    assert np.isnan(recon.contour_abs_sdf(np.ones((16, 16)), "circle"))


def test_soft_mask_and_bad_input():
    s = np.asarray(recon.soft_mask(jnp.array([-1.0, 0.0, 1.0]), 0.1))
    np.testing.assert_allclose(s, [1 / (1 + np.exp(-10)), 0.5, 1 / (1 + np.exp(10))], rtol=1e-6)
    with pytest.raises(ConfigError, match="tau must be > 0"):
        recon.soft_mask(jnp.zeros(3), 0.0)
    cfg = M.ModelConfig(latent_dim=4, num_freqs=2, hidden=(16, 16))
    params = M.init_params(jax.random.PRNGKey(0), cfg)
    with pytest.raises(ShapeError, match="latent dim mismatch"):
        recon.render_rows(params, jnp.zeros(5), cfg, 8)
    with pytest.raises(ShapeError, match="one latent"):
        recon.render_rows(params, jnp.zeros((2, 4)), cfg, 8)
    with pytest.raises(ConfigError, match="unknown shape"):
        recon.analytic("blob", 8)
