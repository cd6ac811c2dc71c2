"""jaxsys: five batched-compute systems in JAX with hand-derived gradients checked against jax.grad."""

from jaxsys.errors import ConfigError, DataError, JaxsysError, ShapeError

__version__ = "0.1.0"
__all__ = ["JaxsysError", "ShapeError", "ConfigError", "DataError", "__version__"]
