"""Element-wise activations. Cache holds what the backward needs (input for ReLU, output for tanh)."""

import jax
import jax.numpy as jnp

from jaxsys.errors import ConfigError


def relu_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """y = max(x, 0); cache = x."""
    return jnp.maximum(x, 0), x


def relu_backward(cache: jax.Array, dy: jax.Array) -> jax.Array:
    """dx = dy * [x > 0] (subgradient 0 at x = 0, as jax.grad of jnp.maximum gives 0.5 there; ties are
    measure-zero for real data)."""
    return jnp.where(cache > 0, dy, jnp.zeros_like(dy))


def tanh_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """y = tanh(x); cache = y."""
    y = jnp.tanh(x)
    return y, y


def tanh_backward(cache: jax.Array, dy: jax.Array) -> jax.Array:
    """dx = dy * (1 - y^2) with y = tanh(x)."""
    return dy * (1 - cache * cache)


def identity_forward(x: jax.Array) -> tuple[jax.Array, None]:
    return x, None


def identity_backward(cache, dy: jax.Array) -> jax.Array:
    return dy


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "linear": (identity_forward, identity_backward),
}


def get_activation(name: str):
    """(forward, backward) for an activation name; ConfigError for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
