"""Shared pure building blocks. Each block is a pair:

    forward(params?, x) -> (y, cache)
    backward(params?, cache, dy) -> (dparams, dx)     # blocks with parameters
    backward(cache, dy) -> dx                          # parameter-free blocks

The backward passes are derived by hand (see each docstring) and checked against jax.vjp / jax.grad
and finite differences with `jaxsys.nn.gradcheck`.
"""

from jaxsys.nn.activations import ACTIVATIONS, get_activation, relu_backward, relu_forward, tanh_backward, tanh_forward
from jaxsys.nn.fourier import fourier_dim, fourier_features, fourier_features_backward
from jaxsys.nn.linear import linear_backward, linear_forward, linear_init
from jaxsys.nn.losses import mse_backward, mse_forward, softmax_cross_entropy_backward, softmax_cross_entropy_forward

__all__ = [
    "linear_init",
    "linear_forward",
    "linear_backward",
    "relu_forward",
    "relu_backward",
    "tanh_forward",
    "tanh_backward",
    "ACTIVATIONS",
    "get_activation",
    "mse_forward",
    "mse_backward",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward",
    "fourier_features",
    "fourier_features_backward",
    "fourier_dim",
]
