"""Analytic 2D signed distance fields and a registry of shapes.

Convention: sdf(p) < 0 inside, = 0 on the boundary, > 0 outside, and |sdf(p)| is the true Euclidean
distance from p to the boundary (so |grad sdf| = 1 almost everywhere). The working domain is
[-DOMAIN, DOMAIN]^2 with DOMAIN = 1.2.

Built in: circle (r = 0.6), box (half-size 0.55), triangle (upward equilateral, side 1.3, its bounding
box centred on the origin), plus three shapes that are *not* in the default training set and serve as
"new" shapes for test-time latent inference: rounded_box, ellipse, hexagon.

The reference C++ sketch computes its triangle as max over edge half-plane values scaled so that the
slanted edges report twice the real distance; here every SDF is the exact Euclidean distance
(min over edges of the point-segment distance for polygons).

Add a shape without touching the trainer:

    register_shape("ring", lambda p: jnp.abs(safe_norm(p) - 0.6) - 0.1)

An SDF function takes points p [..., 2] and returns [...]; it must be written in jax.numpy (it is
traced inside the jitted sampler and differentiated there to project points onto the boundary).
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.errors import ConfigError, ShapeError

DOMAIN = 1.2  # the domain is [-DOMAIN, DOMAIN]^2


def safe_norm(v: jax.Array, axis: int = -1) -> jax.Array:
    """|v| with a finite gradient (0) at v = 0, so SDFs can be differentiated everywhere."""
    sq = jnp.sum(v * v, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str  # registry key
    sdf: Callable[[jax.Array], jax.Array]  # p [..., 2] -> signed distance [...]
    corners: tuple = ()  # ((x, y), ...) sharp corners, targets of corner sampling


def circle_sdf(p: jax.Array, radius: float = 0.6, center=(0.0, 0.0)) -> jax.Array:
    """|p - c| - r."""
    return safe_norm(p - jnp.asarray(center, p.dtype)) - radius


def box_sdf(p: jax.Array, half: float = 0.55) -> jax.Array:
    """Axis-aligned square of half-size `half`: |max(q, 0)| + min(max(q_x, q_y), 0), q = |p| - h."""
    q = jnp.abs(p) - half
    outside = safe_norm(jnp.maximum(q, 0.0))
    inside = jnp.minimum(jnp.max(q, axis=-1), 0.0)
    return outside + inside


def rounded_box_sdf(p: jax.Array, half: float = 0.5, radius: float = 0.2) -> jax.Array:
    """Square of half-size `half` with corners rounded by `radius` (outer extent stays `half`)."""
    return box_sdf(p, half - radius) - radius


def polygon_sdf(p: jax.Array, vertices) -> jax.Array:
    """Exact signed distance to a convex polygon given counter-clockwise (x, y) vertices.

    distance = min over edges of the point-segment distance; sign negative where p is on the inner
    side of every edge.
    """
    v = jnp.asarray(vertices, p.dtype)  # [V, 2]
    e = jnp.roll(v, -1, axis=0) - v  # edges v_i -> v_{i+1}
    w = p[..., None, :] - v  # [..., V, 2]
    h = jnp.clip(jnp.sum(w * e, -1) / jnp.sum(e * e, -1), 0.0, 1.0)
    d = _safe_sqrt(jnp.min(jnp.sum((w - h[..., None] * e) ** 2, -1), axis=-1))
    cross = e[:, 0] * w[..., 1] - e[:, 1] * w[..., 0]  # > 0: left of edge (inside for CCW)
    inside = jnp.all(cross > 0, axis=-1)
    return jnp.where(inside, -d, d)


TRIANGLE_SIDE = 1.3
_TRI_H = TRIANGLE_SIDE * math.sqrt(3.0) / 2.0
TRIANGLE_VERTICES = ((-TRIANGLE_SIDE / 2, -_TRI_H / 2), (TRIANGLE_SIDE / 2, -_TRI_H / 2), (0.0, _TRI_H / 2))
HEXAGON_VERTICES = tuple((0.6 * math.cos(math.pi / 3 * k), 0.6 * math.sin(math.pi / 3 * k)) for k in range(6))
BOX_CORNERS = ((0.55, 0.55), (-0.55, 0.55), (-0.55, -0.55), (0.55, -0.55))


def ellipse_sdf(p: jax.Array, a: float = 0.75, b: float = 0.45, iters: int = 12) -> jax.Array:
    """Exact signed distance to the ellipse x^2/a^2 + y^2/b^2 = 1 (closest point by Newton on the
    angle parameter in the first quadrant; `iters` iterations reach float64 round-off here)."""
    q = jnp.abs(p)
    x, y = q[..., 0], q[..., 1]
    t = jnp.arctan2(a * y, b * x)
    for _ in range(iters):
        c, s = jnp.cos(t), jnp.sin(t)
        ex, ey = a * c - x, b * s - y
        f = -a * s * ex + b * c * ey  # d/dt 0.5 |e(t) - q|^2
        df = (a * s) ** 2 + (b * c) ** 2 - a * c * ex - b * s * ey
        t = jnp.clip(t - f / jnp.where(jnp.abs(df) > 1e-12, df, 1e-12), 0.0, math.pi / 2)
    d = _safe_sqrt((a * jnp.cos(t) - x) ** 2 + (b * jnp.sin(t) - y) ** 2)
    inside = (x / a) ** 2 + (y / b) ** 2 < 1.0
    return jnp.where(inside, -d, d)


_REGISTRY: dict[str, Shape] = {}


def register_shape(name: str, sdf: Callable[[jax.Array], jax.Array], corners=(), overwrite: bool = False) -> Shape:
    """Add a shape to the registry. `corners` are the sharp corners to oversample (may be empty)."""
    if not isinstance(name, str) or not name:
        raise ConfigError("register_shape: name must be a non-empty string")
    if not callable(sdf):
        raise ConfigError(f"register_shape({name!r}): sdf must be callable p[...,2] -> [...]")
    if name in _REGISTRY and not overwrite:
        raise ConfigError(f"register_shape: shape {name!r} already registered (pass overwrite=True)")
    corners = tuple((float(x), float(y)) for x, y in corners)
    shape = Shape(name, sdf, corners)
    _REGISTRY[name] = shape
    return shape


def get_shape(name: str) -> Shape:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown shape {name!r}; registered shapes: {sorted(_REGISTRY)}") from None


def shape_names() -> list[str]:
    return sorted(_REGISTRY)


def get_shapes(names) -> tuple[Shape, ...]:
    names = tuple(names)
    if not names:
        raise ConfigError("at least one shape is needed")
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate shape names in {names}")
    return tuple(get_shape(n) for n in names)


def eval_sdf(shapes, p: jax.Array, idx: jax.Array | None = None) -> jax.Array:
    """Vectorized SDF evaluation.

    idx None: returns [S, ...] (every shape at every point). idx [...] (shape index per point, same
    leading shape as p[..., 0]): returns [...] with the SDF of shape idx[n] at p[n].
    """
    shapes = tuple(get_shape(s) if isinstance(s, str) else s for s in shapes)
    p = jnp.asarray(p)
    if p.shape[-1:] != (2,):
        raise ShapeError(f"eval_sdf: points must have a trailing axis of size 2, got {p.shape}")
    all_d = jnp.stack([s.sdf(p) for s in shapes])  # [S, ...]
    if idx is None:
        return all_d
    out = all_d[0]
    for i in range(1, len(shapes)):  # select (not a one-hot product): no 0 * inf in gradients
        out = jnp.where(idx == i, all_d[i], out)
    return out


def corner_table(shapes) -> tuple[np.ndarray, np.ndarray]:
    """(corners [S, Cmax, 2], counts [S]) padded with zeros; Cmax >= 1."""
    cmax = max([len(s.corners) for s in shapes] + [1])
    tab = np.zeros((len(shapes), cmax, 2))
    cnt = np.zeros((len(shapes),), np.int32)
    for i, s in enumerate(shapes):
        cnt[i] = len(s.corners)
        if s.corners:
            tab[i, : len(s.corners)] = np.asarray(s.corners)
    return tab, cnt


register_shape("circle", circle_sdf)
register_shape("box", box_sdf, BOX_CORNERS)
register_shape("triangle", lambda p: polygon_sdf(p, TRIANGLE_VERTICES), TRIANGLE_VERTICES)
register_shape("rounded_box", rounded_box_sdf)
register_shape("ellipse", ellipse_sdf)
register_shape("hexagon", lambda p: polygon_sdf(p, HEXAGON_VERTICES), HEXAGON_VERTICES)

DEFAULT_SHAPES = ("circle", "box", "triangle")
