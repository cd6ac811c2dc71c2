"""Gradient checks for hand-derived backward passes.

Three public checks, all meant to run in float64 (`jax.config.update("jax_enable_x64", True)`):

- `check_grad(loss_fn, grad_fn, params, *args)`: hand gradient of a scalar loss vs `jax.grad`.
- `check_vjp(forward, backward, params, x)`: a block's `backward(params, cache, dy)` vs `jax.vjp` of its
  forward, for a random cotangent dy (parameter-free blocks: pass `params=None`).
- `check_finite_differences(loss_fn, grads, params, *args)`: directional derivatives
  <g, d> vs (L(p + eps d) - L(p - eps d)) / (2 eps) along random directions d.
"""

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.errors import JaxsysError


def random_like(key: jax.Array, tree: Any) -> Any:
    """A pytree of standard-normal arrays with the shapes and float dtypes of `tree`."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, jnp.shape(l), jnp.result_type(l)) for k, l in zip(keys, leaves)]
    )


def _require_x64(what: str) -> None:
    if not jax.config.jax_enable_x64:
        raise JaxsysError(f"{what}: gradient checks need float64; call jax.config.update('jax_enable_x64', True) first")


def check_grad(
    loss_fn: Callable, grad_fn: Callable, params: Any, *args, atol: float = 1e-10, rtol: float = 1e-9
) -> Any:
    """Assert grad_fn(params, *args) == jax.grad(loss_fn)(params, *args) leaf by leaf; returns the
    hand gradient."""
    _require_x64("check_grad")
    hand = grad_fn(params, *args)
    ref = jax.grad(loss_fn)(params, *args)
    chex.assert_trees_all_close(hand, ref, atol=atol, rtol=rtol)
    return hand


def check_vjp(
    forward: Callable,
    backward: Callable,
    params: Any,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    atol: float = 1e-10,
    rtol: float = 1e-9,
) -> None:
    """Assert a block's hand backward equals jax.vjp of its forward.

    forward(params, x) -> (y, cache) and backward(params, cache, dy) -> (dparams, dx); for a
    parameter-free block pass params=None with forward(x) -> (y, cache), backward(cache, dy) -> dx.
    """
    _require_x64("check_vjp")
    key = jax.random.PRNGKey(0) if key is None else key
    if params is None:
        y, cache = forward(x)
        dy = random_like(key, y)
        dx = backward(cache, dy)
        _, vjp = jax.vjp(lambda x_: forward(x_)[0], x)
        (dx_ref,) = vjp(dy)
        chex.assert_trees_all_close(dx, dx_ref, atol=atol, rtol=rtol)
        return
    y, cache = forward(params, x)
    dy = random_like(key, y)
    dparams, dx = backward(params, cache, dy)
    _, vjp = jax.vjp(lambda p_, x_: forward(p_, x_)[0], params, x)
    dparams_ref, dx_ref = vjp(dy)
    chex.assert_trees_all_close(dparams, dparams_ref, atol=atol, rtol=rtol)
    if dx is not None:
        chex.assert_trees_all_close(dx, dx_ref, atol=atol, rtol=rtol)


def check_finite_differences(
    loss_fn: Callable,
    grads: Any,
    params: Any,
    *args,
    key: jax.Array | None = None,
    num_directions: int = 4,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> None:
    """Assert <grads, d> matches the central difference of loss_fn along random unit directions d."""
    _require_x64("check_finite_differences")
    key = jax.random.PRNGKey(1) if key is None else key
    loss_fn = jax.jit(loss_fn)
    for k in jax.random.split(key, num_directions):
        d = random_like(k, params)
        norm = jnp.sqrt(sum(jnp.sum(l * l) for l in jax.tree_util.tree_leaves(d)))
        d = jax.tree_util.tree_map(lambda l: l / norm, d)
        plus = jax.tree_util.tree_map(lambda p, dd: p + eps * dd, params, d)
        minus = jax.tree_util.tree_map(lambda p, dd: p - eps * dd, params, d)
        fd = (float(loss_fn(plus, *args)) - float(loss_fn(minus, *args))) / (2 * eps)
        an = float(
            sum(jnp.sum(g * dd) for g, dd in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(d)))
        )
        np.testing.assert_allclose(
            an, fd, rtol=rtol, atol=atol, err_msg="hand gradient disagrees with finite differences"
        )
