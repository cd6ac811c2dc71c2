"""Gradient checks of the MLP on real data, used by `jaxsys mlp gradcheck` and the tour.

Runs in float64 (inside `jax.enable_x64`): the hand-derived gradient vs `jax.grad` of the same loss,
the general-depth backward vs the derivation's 2-hidden-layer version, and directional finite
differences. Returns the measured errors; raises JaxsysError when one exceeds its tolerance.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.errors import JaxsysError
from jaxsys.mlp import model
from jaxsys.mlp.data import load

RTOL = 1e-9  # relative tolerance vs jax.grad (max |diff| / max |grad|)
FD_RTOL = 1e-6  # relative tolerance of <grad, d> vs the central difference along d

_hand_grad = jax.jit(model.hand_grad, static_argnames="cfg")
_jax_grad = jax.jit(jax.grad(model.loss_fn), static_argnames="cfg")


@jax.jit
def _hand_grad_2hidden(params, x, y):
    z3, c2 = model.forward_2hidden(params, x)
    cfg = model.MLPConfig((x.shape[1], *(p["w"].shape[0] for p in params)), "classify" if y.ndim == 1 else "regress")
    _, lc = model.loss_forward(z3, y, cfg)
    return model.backward_2hidden(params, c2, model.loss_backward(lc, cfg))


def _rel_err(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb))
    den = max(float(jnp.max(jnp.abs(y))) for y in lb)
    return num / max(den, 1e-300)


@functools.partial(jax.jit, static_argnames="cfg")
def _central_difference(params, d, x, y, eps, cfg):
    plus = jax.tree_util.tree_map(lambda p, v: p + eps * v, params, d)
    minus = jax.tree_util.tree_map(lambda p, v: p - eps * v, params, d)
    return (model.loss_fn(plus, x, y, cfg) - model.loss_fn(minus, x, y, cfg)) / (2 * eps)


def _finite_difference_error(params, grads, x, y, cfg, rng, num_directions: int = 3, eps: float = 1e-6) -> float:
    """max over random unit directions d of |<g, d> - FD_d| / |g| (the central-difference scheme of
    `jaxsys.nn.gradcheck.check_finite_differences`, with the loss pair jitted once). Dividing by the
    gradient norm (the largest possible |<g, d>|) keeps near-orthogonal directions from inflating it."""
    gnorm = float(np.sqrt(sum(float(jnp.sum(g * g)) for g in jax.tree_util.tree_leaves(grads))))
    worst = 0.0
    for _ in range(num_directions):
        d = [{k: rng.normal(size=v.shape) for k, v in p.items()} for p in params]
        norm = np.sqrt(sum(np.sum(v * v) for p in d for v in p.values()))
        d = jax.tree_util.tree_map(lambda v: jnp.asarray(v / norm), d)
        fd = float(_central_difference(params, d, x, y, eps, cfg=cfg))
        an = float(sum(jnp.sum(g * v) for g, v in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(d))))
        worst = max(worst, abs(an - fd) / max(gnorm, 1e-300))
    return worst


def check_mlp_gradients(
    task: str = "classify", hidden: tuple[int, ...] = (32, 32), batch: int = 32, seed: int = 0
) -> dict:
    """Compare hand gradients with jax.grad and finite differences on a batch of the task's data."""
    data = load(task)
    with jax.enable_x64(True):
        cfg = model.MLPConfig((data.x_train.shape[1], *hidden, data.num_outputs), task)
        rng = np.random.default_rng(seed)  # numpy draws: no per-op compiles in eager mode
        # He-scaled weights and small non-zero biases (bias gradients are not checked at b = 0)
        params = [
            {"w": jnp.asarray(rng.normal(size=(o, i)) * np.sqrt(2.0 / i)), "b": jnp.asarray(0.1 * rng.normal(size=o))}
            for i, o in zip(cfg.sizes[:-1], cfg.sizes[1:])
        ]
        idx = np.random.default_rng(seed).choice(len(data.x_train), batch, replace=False)
        x = jnp.asarray(data.x_train[idx], jnp.float64)
        y = jnp.asarray(data.y_train[idx])
        if task == "regress":
            y = y.astype(jnp.float64)
        model.validate_batch(x, y, cfg)
        hand = _hand_grad(params, x, y, cfg=cfg)
        ref = _jax_grad(params, x, y, cfg=cfg)
        out = {"task": task, "sizes": list(cfg.sizes), "batch": batch, "rel_err_vs_jax_grad": _rel_err(hand, ref)}
        if len(hidden) == 2:
            out["rel_err_2hidden_vs_general"] = _rel_err(_hand_grad_2hidden(params, x, y), hand)
        for k, v in list(out.items()):
            if k.startswith("rel_err_") and not v <= RTOL:
                raise JaxsysError(f"MLP gradient check failed: {k} = {v:.3g} > {RTOL}")
        out["fd_rel_err"] = _finite_difference_error(params, hand, x, y, cfg, rng)
        if not out["fd_rel_err"] <= FD_RTOL:
            raise JaxsysError(
                f"MLP hand gradient disagrees with finite differences: relative error "
                f"{out['fd_rel_err']:.3g} > {FD_RTOL}"
            )
        out["finite_differences"] = "ok"
    return out
