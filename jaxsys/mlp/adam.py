"""Adam two ways: written out by hand as an optax-style (init_fn, update_fn) pair, and optax.adam.

The hand version follows Algorithm 1 of Kingma & Ba (2015), "Adam: a method for stochastic
optimization", with g the gradient at step t = 1, 2, ...:

    m_t = b1 m_{t-1} + (1 - b1) g
    v_t = b2 v_{t-1} + (1 - b2) g^2
    m^_t = m_t / (1 - b1^t)
    v^_t = v_t / (1 - b2^t)
    update = -lr m^_t / (sqrt(v^_t) + eps)          (params_t = params_{t-1} + update)
"""
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsys.errors import ConfigError

OPTIMIZERS = ("hand", "optax")


class AdamState(NamedTuple):
    count: jax.Array  # int32 scalar, number of updates applied so far (t - 1 during an update)
    mu: Any           # first moment m, a pytree like params
    nu: Any           # second moment v, a pytree like params


def adam(learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
         ) -> optax.GradientTransformation:
    """Hand-written Adam as an optax GradientTransformation (init_fn, update_fn).

    Args:
      learning_rate: step size lr.
      b1, b2: decay rates of the first and second moment estimates.
      eps: added to sqrt(v^) in the denominator.

    Returns:
      `optax.GradientTransformation(init_fn, update_fn)` with `init_fn(params) -> AdamState` and
      `update_fn(grads, state, params=None) -> (updates, state)`; apply with `optax.apply_updates`.
    """
    def init_fn(params) -> AdamState:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return AdamState(count=jnp.zeros([], jnp.int32), mu=zeros,
                         nu=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update_fn(grads, state: AdamState, params=None) -> tuple[Any, AdamState]:
        del params
        t = state.count + 1
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * (g * g), state.nu, grads)
        c1 = 1 - b1 ** t  # bias corrections, in float32/64 from the int count
        c2 = 1 - b2 ** t

        def step(m, v):
            m_hat = m / c1.astype(m.dtype)
            v_hat = v / c2.astype(v.dtype)
            return -learning_rate * m_hat / (jnp.sqrt(v_hat) + eps)

        updates = jax.tree_util.tree_map(step, mu, nu)
        return updates, AdamState(count=t, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class AdamConfig:
    kind: str = "hand"          # "hand" (this file's adam) or "optax" (optax.adam, production path)
    learning_rate: float = 1e-3  # lr
    b1: float = 0.9             # first-moment decay
    b2: float = 0.999           # second-moment decay
    eps: float = 1e-8           # denominator epsilon

    def __post_init__(self):
        if self.kind not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.kind!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"Adam decays must lie in [0, 1), got b1={self.b1}, b2={self.b2}")


def make_optimizer(cfg: AdamConfig) -> optax.GradientTransformation:
    """The hand Adam or optax.adam with the same hyper-parameters."""
    if cfg.kind == "hand":
        return adam(cfg.learning_rate, cfg.b1, cfg.b2, cfg.eps)
    return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
