"""Jittable, keyed training-point sampler: a mixture of near-boundary, near-corner and uniform points.

Per sample: the shape index s ~ U{0..S-1}; the category c is drawn with
P(boundary) = boundary_frac, P(corner) = corner_frac, P(uniform) = 1 - both:

- boundary: a uniform point q is projected onto the zero set, p0 = q - sdf(q) grad sdf(q) (exact for
  a true Euclidean SDF), then moved along the normal by o ~ U(-band, band): |sdf(p)| <= |o| < band
  because the SDF is 1-Lipschitz and sdf(p0) = 0.
- corner: a corner of shape s chosen uniformly, plus a point uniform in a disk of radius
  corner_radius. Shapes without corners (circle) draw a boundary point instead (category stays
  "corner" in `cat` so the mixture proportions are those asked for).
- uniform: uniform on the domain [-1.2, 1.2]^2.

Targets t = clip(sdf(p) / beta, -1, 1).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.autodecoder.shapes import DOMAIN, corner_table, eval_sdf, get_shapes
from jaxsys.errors import ConfigError

BOUNDARY, CORNER, UNIFORM = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    shapes: tuple = ("circle", "box", "triangle")  # registry names; index = position
    boundary_frac: float = 0.6  # fraction of near-boundary points
    corner_frac: float = 0.15  # fraction of near-corner points
    band: float = 0.1  # near-boundary points have |sdf| < band
    corner_radius: float = 0.1  # near-corner points lie within this radius of a corner
    beta: float = 0.1  # target scale: t = clip(sdf / beta, -1, 1)

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(self.shapes))  # a list from config.json: hashable again
        get_shapes(self.shapes)
        for name in ("boundary_frac", "corner_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"SamplerConfig.{name} must be in [0, 1], got {v}")
        if self.boundary_frac + self.corner_frac > 1.0 + 1e-12:
            raise ConfigError(
                "SamplerConfig: boundary_frac + corner_frac must be <= 1, got "
                f"{self.boundary_frac} + {self.corner_frac}"
            )
        for name in ("band", "corner_radius", "beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"SamplerConfig.{name} must be > 0, got {getattr(self, name)}")


class Batch(NamedTuple):
    p: jax.Array  # [B, 2] points
    t: jax.Array  # [B] targets clip(sdf / beta, -1, 1)
    s: jax.Array  # [B] int32 shape index
    cat: jax.Array  # [B] int32 category (BOUNDARY, CORNER, UNIFORM)


def sample(
    key: jax.Array, batch_size: int, cfg: SamplerConfig, dtype=jnp.float32, shape_index: jax.Array | None = None
) -> Batch:
    """Draw `batch_size` training points (see module docstring). `shape_index` fixes s for all."""
    shapes = get_shapes(cfg.shapes)
    S = len(shapes)
    ks, kc, kq, ko, kci, kd = jax.random.split(key, 6)
    if shape_index is None:
        s = jax.random.randint(ks, (batch_size,), 0, S, dtype=jnp.int32)
    else:
        s = jnp.full((batch_size,), shape_index, jnp.int32)
    u = jax.random.uniform(kc, (batch_size,), dtype)
    cat = jnp.where(
        u < cfg.boundary_frac, BOUNDARY, jnp.where(u < cfg.boundary_frac + cfg.corner_frac, CORNER, UNIFORM)
    ).astype(jnp.int32)
    q = jax.random.uniform(kq, (batch_size, 2), dtype, -DOMAIN, DOMAIN)

    def sdf1(pt, si):
        return eval_sdf(shapes, pt, si)

    d, g = jax.vmap(jax.value_and_grad(sdf1))(q, s)
    gn = g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    off = jax.random.uniform(ko, (batch_size, 1), dtype, -cfg.band, cfg.band)
    p_bnd = q - d[:, None] * gn + off * gn

    tab, cnt = corner_table(shapes)
    tab = jnp.asarray(tab, dtype)
    cnt = jnp.asarray(cnt)
    ci = jnp.floor(jax.random.uniform(kci, (batch_size,), dtype) * jnp.maximum(cnt[s], 1)).astype(jnp.int32)
    ci = jnp.minimum(ci, jnp.maximum(cnt[s] - 1, 0))
    corner = tab[s, ci]
    kr, ka = jax.random.split(kd)
    r = cfg.corner_radius * jnp.sqrt(jax.random.uniform(kr, (batch_size,), dtype))
    ang = jax.random.uniform(ka, (batch_size,), dtype, 0.0, 2 * jnp.pi)
    p_cor = corner + r[:, None] * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
    has_corner = (cnt[s] > 0)[:, None]

    p = jnp.where(
        (cat == BOUNDARY)[:, None], p_bnd, jnp.where((cat == CORNER)[:, None], jnp.where(has_corner, p_cor, p_bnd), q)
    )
    p = jnp.clip(p, -DOMAIN, DOMAIN)
    t = jnp.clip(eval_sdf(shapes, p, s) / cfg.beta, -1.0, 1.0)
    return Batch(p, t, s, cat)


sample_jit = jax.jit(sample, static_argnames=("batch_size", "cfg", "dtype"))
