"""Reconstruction of a latent's SDF on a pixel grid, and the quality metrics.

Three evaluations of the same function (identical up to float round-off):
- `render_rows`: one batched forward per image row (B = width), `lax.map` over rows.
- `render_image`: the whole image as one vmapped evaluation of the per-pixel function.
- `render_pixels`: one single-sample forward per pixel (`lax.map`), the reference.

Grid: pixel (i, j) is at (x_j, y_i) with x, y = linspace(-1.2, 1.2, res), so row 0 is the bottom
(plot with origin="lower"). Outputs are the network value y (~ clip(sdf / beta, -1, 1)); the
predicted SDF is beta * y.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder.shapes import DOMAIN, eval_sdf, get_shape
from jaxsys.errors import ConfigError, ShapeError


def grid_axis(res: int, dtype=jnp.float32) -> jax.Array:
    return jnp.linspace(-DOMAIN, DOMAIN, res, dtype=dtype)


def grid_points(res: int, dtype=jnp.float32) -> jax.Array:
    """[res, res, 2] with [i, j] = (x_j, y_i)."""
    a = grid_axis(res, dtype)
    X, Y = jnp.meshgrid(a, a, indexing="xy")
    return jnp.stack([X, Y], -1)


def _check(params, z, mcfg: M.ModelConfig, res: int):
    if res < 2:
        raise ConfigError(f"resolution must be >= 2, got {res}")
    if jnp.ndim(z) != 1:
        raise ShapeError(f"expected one latent z of shape [d], got {jnp.shape(z)}")
    M.check_params(params, jnp.asarray(z)[None], mcfg)


@partial(jax.jit, static_argnames=("mcfg", "res"))
def _rows(params, z, mcfg, res):
    pts = grid_points(res, z.dtype)

    def row(p_Wx2):
        return M.predict(params, z, M.encode(p_Wx2, mcfg))  # one [W, I] forward

    return jax.lax.map(row, pts)


@partial(jax.jit, static_argnames=("mcfg", "res"))
def _image(params, z, mcfg, res):
    pts = grid_points(res, z.dtype).reshape(-1, 2)
    one = lambda p: M.predict(params, z, M.encode(p, mcfg))  # noqa: E731
    return jax.vmap(one)(pts).reshape(res, res)


@partial(jax.jit, static_argnames=("mcfg", "res"))
def _pixels(params, z, mcfg, res):
    pts = grid_points(res, z.dtype).reshape(-1, 2)
    one = lambda p: M.predict(params, z, M.encode(p, mcfg))  # noqa: E731
    return jax.lax.map(one, pts).reshape(res, res)


def render_rows(params, z, mcfg: M.ModelConfig, res: int) -> jax.Array:
    """[res, res] network output, one batched forward per row."""
    _check(params, z, mcfg, res)
    return _rows(params, jnp.asarray(z), mcfg, res)


def render_image(params, z, mcfg: M.ModelConfig, res: int) -> jax.Array:
    """[res, res] network output, the whole image vmapped."""
    _check(params, z, mcfg, res)
    return _image(params, jnp.asarray(z), mcfg, res)


def render_pixels(params, z, mcfg: M.ModelConfig, res: int) -> jax.Array:
    """[res, res] network output, one single-sample forward per pixel (reference, slow)."""
    _check(params, z, mcfg, res)
    return _pixels(params, jnp.asarray(z), mcfg, res)


@partial(jax.jit, static_argnames=("shape", "res", "dtype"))
def _analytic(shape, res, dtype):
    return eval_sdf([get_shape(shape)], grid_points(res, dtype))[0]


def analytic(shape: str, res: int, dtype=jnp.float32) -> jax.Array:
    """[res, res] analytic SDF of a registered shape on the grid."""
    get_shape(shape)
    return _analytic(shape, res, jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("shape",))
def _sdf_at(shape, pts):
    return eval_sdf([get_shape(shape)], pts)[0]


def sdf_at(shape: str, pts: np.ndarray) -> np.ndarray:
    """Analytic SDF at arbitrary points [n, 2] (padded to a power of two: few compilations)."""
    get_shape(shape)
    n = len(pts)
    size = 1 << max(int(np.ceil(np.log2(max(n, 1)))), 4)
    buf = np.zeros((size, 2), np.float64 if jax.config.jax_enable_x64 else np.float32)
    buf[:n] = pts
    return np.asarray(_sdf_at(shape, jnp.asarray(buf)))[:n]


def soft_mask(sdf, tau: float) -> np.ndarray:
    """sigmoid(-sdf / tau): ~1 inside, ~0 outside, 0.5 on the zero set (numpy)."""
    if not tau > 0:
        raise ConfigError(f"soft mask temperature tau must be > 0, got {tau}")
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(np.asarray(sdf, np.float64) / tau))


def iou(pred_sdf, true_sdf) -> float:
    """Intersection over union of the masks {sdf < 0}."""
    a = np.asarray(pred_sdf) < 0
    b = np.asarray(true_sdf) < 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def zero_crossings(field: np.ndarray) -> np.ndarray:
    """Points [n, 2] where `field` on the grid changes sign between horizontal or vertical
    neighbours, linearly interpolated (the predicted zero contour)."""
    f = np.asarray(field, np.float64)
    res = f.shape[0]
    a = np.linspace(-DOMAIN, DOMAIN, res)
    out = []
    for axis in (0, 1):
        f0 = f[:-1, :] if axis == 0 else f[:, :-1]
        f1 = f[1:, :] if axis == 0 else f[:, 1:]
        i, j = np.nonzero((f0 < 0) != (f1 < 0))
        w = f0[i, j] / (f0[i, j] - f1[i, j])
        if axis == 0:  # between rows i and i+1: y moves
            out.append(np.stack([a[j], a[i] + w * (a[i + 1] - a[i])], 1))
        else:
            out.append(np.stack([a[j] + w * (a[j + 1] - a[j]), a[i]], 1))
    return np.concatenate(out, 0)


def contour_abs_sdf(pred_field, shape: str) -> float:
    """Mean |analytic SDF| over the predicted zero contour (domain units; nan if no contour)."""
    pts = zero_crossings(pred_field)
    if len(pts) == 0:
        return float("nan")
    return float(np.mean(np.abs(sdf_at(shape, pts))))


def shape_metrics(params, z, mcfg: M.ModelConfig, shape: str, res: int = 128) -> dict:
    y = np.asarray(render_rows(params, z, mcfg, res))
    true = np.asarray(analytic(shape, res))
    return {"iou": round(iou(y, true), 5), "contour_abs_sdf": round(contour_abs_sdf(y, shape), 6)}


def evaluate(params, Z, cfg, res: int = 128) -> dict:
    """Per-shape IoU at res x res and mean |analytic SDF| on the predicted zero contour."""
    per = {name: shape_metrics(params, Z[i], cfg.model, name, res) for i, name in enumerate(cfg.sampler.shapes)}
    return {
        "res": res,
        "iou": {k: v["iou"] for k, v in per.items()},
        "contour_abs_sdf": {k: v["contour_abs_sdf"] for k, v in per.items()},
        "min_iou": min(v["iou"] for v in per.values()),
    }
