"""Gradient checks of the MLP on real data, used by `jaxsys mlp gradcheck` and the tour.

Runs in float64 (inside `jax.enable_x64`): the hand-derived gradient vs `jax.grad` of the same loss,
the general-depth backward vs the derivation's 2-hidden-layer version, and directional finite
differences. Returns the measured errors; raises JaxsysError when one exceeds its tolerance.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.errors import JaxsysError
from jaxsys.mlp import model
from jaxsys.mlp.data import load
from jaxsys.nn import gradcheck

RTOL = 1e-9  # relative tolerance vs jax.grad (max |diff| / max |grad|)


def _rel_err(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb))
    den = max(float(jnp.max(jnp.abs(y))) for y in lb)
    return num / max(den, 1e-300)


def check_mlp_gradients(task: str = "classify", hidden: tuple[int, ...] = (32, 32), batch: int = 32,
                        seed: int = 0) -> dict:
    """Compare hand gradients with jax.grad and finite differences on a batch of the task's data."""
    data = load(task)
    with jax.enable_x64(True):
        cfg = model.MLPConfig((data.x_train.shape[1], *hidden, data.num_outputs), task)
        params = model.init(jax.random.PRNGKey(seed), cfg, jnp.float64)
        # small random biases so the bias gradients are not trivially checked at zero
        keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(params))
        params = [{"w": p["w"], "b": 0.1 * jax.random.normal(k, p["b"].shape, jnp.float64)}
                  for p, k in zip(params, keys)]
        idx = np.random.default_rng(seed).choice(len(data.x_train), batch, replace=False)
        x = jnp.asarray(data.x_train[idx], jnp.float64)
        y = jnp.asarray(data.y_train[idx])
        if task == "regress":
            y = y.astype(jnp.float64)
        model.validate_batch(x, y, cfg)
        hand = model.hand_grad(params, x, y, cfg)
        ref = jax.grad(model.loss_fn)(params, x, y, cfg)
        out = {"task": task, "sizes": list(cfg.sizes), "batch": batch,
               "rel_err_vs_jax_grad": _rel_err(hand, ref)}
        if len(hidden) == 2:
            z3, c2 = model.forward_2hidden(params, x)
            _, lc = model.loss_forward(z3, y, cfg)
            out["rel_err_2hidden_vs_general"] = _rel_err(
                model.backward_2hidden(params, c2, model.loss_backward(lc, cfg)), hand)
        try:
            gradcheck.check_finite_differences(lambda p: model.loss_fn(p, x, y, cfg), hand, params,
                                               num_directions=4, eps=1e-6, rtol=1e-6)
            out["finite_differences"] = "ok"
        except AssertionError as e:
            raise JaxsysError(f"MLP hand gradient disagrees with finite differences: {e}") from e
    for k, v in out.items():
        if k.startswith("rel_err") and not v <= RTOL:
            raise JaxsysError(f"MLP gradient check failed: {k} = {v:.3g} > {RTOL}")
    return out
