"""Analytic SDFs: signs, zero sets, true Euclidean distance (vs brute force), registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.autodecoder import shapes as SH
from jaxsys.errors import ConfigError, ShapeError

pytestmark = pytest.mark.x64  # float64: compared with float64 references at tight tolerances

jax.config.update("jax_enable_x64", True)


def boundary_points(name, n=2000):
    """Dense points on each built-in shape's boundary, built here from its definition."""
    t = np.linspace(0, 1, n, endpoint=False)
    if name == "circle":
        return 0.6 * np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], 1)
    if name == "box":
        verts = np.array([[0.55, 0.55], [-0.55, 0.55], [-0.55, -0.55], [0.55, -0.55]])
    elif name == "triangle":
        s = 1.3
        h = s * math.sqrt(3) / 2
        verts = np.array([[-s / 2, -h / 2], [s / 2, -h / 2], [0, h / 2]])
    elif name == "hexagon":
        verts = np.array([[0.6 * math.cos(math.pi / 3 * k), 0.6 * math.sin(math.pi / 3 * k)] for k in range(6)])
    else:
        raise AssertionError(name)
    pts = []
    for a, b in zip(verts, np.roll(verts, -1, 0)):
        pts.append(a + t[:, None] * (b - a))
    return np.concatenate(pts)


@pytest.mark.parametrize("name", ["circle", "box", "triangle", "hexagon"])
def test_zero_set_and_true_distance(name):
    bnd = boundary_points(name)
    d_bnd = np.asarray(SH.eval_sdf([name], jnp.asarray(bnd))[0])
    assert np.max(np.abs(d_bnd)) < 1e-12
    rng = np.random.default_rng(0)
    p = rng.uniform(-1.2, 1.2, (400, 2))
    d = np.asarray(SH.eval_sdf([name], jnp.asarray(p))[0])
    brute = np.min(np.linalg.norm(p[:, None] - bnd[None], axis=-1), axis=1)
    # dense boundary sampling: brute force over-estimates by at most half the spacing
    np.testing.assert_allclose(np.abs(d), brute, atol=2e-3)
    assert np.all(np.abs(d) <= brute + 1e-12)


@pytest.mark.parametrize(
    "name,inside,outside",
    [
        ("circle", [(0, 0), (0.59, 0)], [(0.61, 0), (1.1, 1.1)]),
        ("box", [(0.54, 0.54), (0, -0.5)], [(0.56, 0), (0.6, 0.6)]),
        ("triangle", [(0, 0), (0, 0.5)], [(0.6, 0.5), (0, -0.6)]),
        ("rounded_box", [(0, 0), (0.4, 0.4)], [(0.49, 0.49), (0.51, 0)]),
        ("ellipse", [(0.74, 0), (0, 0.44)], [(0.76, 0), (0, 0.46)]),
    ],
)
def test_signs(name, inside, outside):
    d_in = np.asarray(SH.eval_sdf([name], jnp.asarray(inside, jnp.float64))[0])
    d_out = np.asarray(SH.eval_sdf([name], jnp.asarray(outside, jnp.float64))[0])
    assert np.all(d_in < 0) and np.all(d_out > 0)


def test_known_values():
    circ = float(SH.eval_sdf(["circle"], jnp.array([[1.0, 0.0]]))[0, 0])
    assert abs(circ - 0.4) < 1e-15
    corner = float(SH.eval_sdf(["box"], jnp.array([[0.85, 0.95]]))[0, 0])
    assert abs(corner - 0.5) < 1e-15  # 3-4-5 from the corner (0.55, 0.55)
    # triangle: distance from the centroid-ish origin to the slanted edge, computed by hand
    s, h = 1.3, 1.3 * math.sqrt(3) / 2
    # slanted right edge from (s/2, -h/2) to (0, h/2); distance of the origin to that line
    a, b = np.array([s / 2, -h / 2]), np.array([0.0, h / 2])
    n = np.array([b[1] - a[1], -(b[0] - a[0])]) / np.linalg.norm(b - a)
    want = -min(abs(np.dot(-a, n)), h / 2)
    got = float(SH.eval_sdf(["triangle"], jnp.zeros((1, 2)))[0, 0])
    assert abs(got - want) < 1e-12


@pytest.mark.parametrize("name", ["circle", "box", "triangle", "ellipse"])
def test_unit_gradient(name):
    rng = np.random.default_rng(1)
    p = jnp.asarray(rng.uniform(-1.2, 1.2, (300, 2)))
    g = jax.jit(jax.vmap(jax.grad(lambda q: SH.eval_sdf([name], q[None])[0, 0])))(p)
    norms = np.linalg.norm(np.asarray(g), axis=-1)
    assert np.all(np.isfinite(norms))
    # |grad| = 1 except on the measure-zero medial axis / inner corners
    assert np.mean(np.abs(norms - 1) < 1e-6) > 0.97


def test_eval_with_index_and_registry():
    p = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.85, 0.95]])
    idx = jnp.array([0, 0, 1])
    out = np.asarray(SH.eval_sdf(["circle", "box"], p, idx))
    np.testing.assert_allclose(out, [-0.6, 0.4, 0.5], atol=1e-12)
    SH.register_shape("test_ring", lambda q: jnp.abs(SH.safe_norm(q) - 0.6) - 0.1, overwrite=True)
    assert "test_ring" in SH.shape_names()
    assert float(SH.eval_sdf(["test_ring"], jnp.array([[0.6, 0.0]]))[0, 0]) == pytest.approx(-0.1)
    with pytest.raises(ConfigError, match="unknown shape 'nope'"):
        SH.get_shape("nope")
    with pytest.raises(ConfigError, match="already registered"):
        SH.register_shape("circle", SH.circle_sdf)
    with pytest.raises(ShapeError, match="trailing axis of size 2"):
        SH.eval_sdf(["circle"], jnp.zeros((3, 3)))
    with pytest.raises(ConfigError, match="duplicate"):
        SH.get_shapes(["box", "box"])
