"""Sampler: category fractions within binomial bounds, band / corner radius, shape balance."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.autodecoder import shapes as SH
from jaxsys.autodecoder.sampler import BOUNDARY, CORNER, UNIFORM, SamplerConfig, sample_jit
from jaxsys.errors import ConfigError

pytestmark = pytest.mark.x64  # float64: compared with float64 references at tight tolerances

N = 40_000


def _within(count, n, p, sigmas=5.0):
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


@pytest.fixture(scope="module")
def drawn():
    cfg = SamplerConfig(boundary_frac=0.5, corner_frac=0.2, band=0.08, corner_radius=0.07)
    b = sample_jit(jax.random.PRNGKey(3), N, cfg, jnp.float64)
    return cfg, jax.tree_util.tree_map(np.asarray, b)


def test_fractions(drawn):
    cfg, b = drawn
    assert _within((b.cat == BOUNDARY).sum(), N, 0.5)
    assert _within((b.cat == CORNER).sum(), N, 0.2)
    assert _within((b.cat == UNIFORM).sum(), N, 0.3)
    for s in range(3):
        assert _within((b.s == s).sum(), N, 1 / 3)


def test_geometry(drawn):
    cfg, b = drawn
    d = np.asarray(SH.eval_sdf(cfg.shapes, jnp.asarray(b.p), jnp.asarray(b.s)))
    np.testing.assert_allclose(b.t, np.clip(d / cfg.beta, -1, 1), atol=1e-12)
    assert np.all(np.abs(b.p) <= SH.DOMAIN)
    bnd = b.cat == BOUNDARY
    assert np.all(np.abs(d[bnd]) < cfg.band + 1e-9)
    # boundary points are spread over both sides of the zero set
    assert 0.3 < np.mean(d[bnd] < 0) < 0.7
    for s, name in enumerate(cfg.shapes):
        sel = (b.cat == CORNER) & (b.s == s)
        corners = np.asarray(SH.get_shape(name).corners)
        if len(corners):
            dist = np.min(np.linalg.norm(b.p[sel][:, None] - corners[None], axis=-1), axis=1)
            assert np.all(dist <= cfg.corner_radius + 1e-9)
            # every corner is used about equally
            which = np.argmin(np.linalg.norm(b.p[sel][:, None] - corners[None], axis=-1), axis=1)
            for c in range(len(corners)):
                assert _within((which == c).sum(), sel.sum(), 1 / len(corners))
        else:  # circle: no corners -> near-boundary points instead
            assert np.all(np.abs(d[sel]) < cfg.band + 1e-9)
    uni = b.cat == UNIFORM
    # uniform points: each quadrant holds about a quarter
    assert _within(((b.p[uni, 0] > 0) & (b.p[uni, 1] > 0)).sum(), uni.sum(), 0.25)


def test_deterministic_and_keyed(drawn):
    cfg, first = drawn
    a = sample_jit(jax.random.PRNGKey(3), N, cfg, jnp.float64)
    b = sample_jit(jax.random.PRNGKey(3), N, cfg, jnp.float64)
    c = sample_jit(jax.random.PRNGKey(1), N, cfg, jnp.float64)
    np.testing.assert_array_equal(np.asarray(a.p), first.p)
    np.testing.assert_array_equal(np.asarray(a.p), np.asarray(b.p))
    assert not np.allclose(np.asarray(a.p), np.asarray(c.p))


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(boundary_frac=0.9, corner_frac=0.2), "must be <= 1"),
        (dict(band=0.0), "band"),
        (dict(beta=-1.0), "beta"),
        (dict(shapes=("circle", "blob")), "unknown shape 'blob'"),
        (dict(shapes=()), "at least one shape"),
    ],
)
def test_bad_config(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        dataclasses.replace(SamplerConfig(), **kw)
