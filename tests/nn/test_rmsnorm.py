import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.nn import gradcheck
from jaxsys.nn.rmsnorm import RMSNORM_EPS, rmsnorm_backward, rmsnorm_forward

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


@pytest.mark.parametrize("shape", [(2, 3, 8), (1, 1)])
def test_rmsnorm_vjp(shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
    gradcheck.check_vjp(jax.jit(rmsnorm_forward), jax.jit(rmsnorm_backward), None, x)


def test_rmsnorm_reference_values():
    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    y, _ = rmsnorm_forward(x)
    r = 1.0 / np.sqrt(12.5 + 1e-5)
    np.testing.assert_allclose(y, [[3 * r, 4 * r], [0.0, 0.0]], rtol=1e-14)
    assert RMSNORM_EPS == 1e-5


def test_rmsnorm_finite_differences():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 6), jnp.float64)
    w = jax.random.normal(jax.random.PRNGKey(2), (3, 6), jnp.float64)
    loss = jax.jit(lambda x_: jnp.sum(w * jnp.sin(rmsnorm_forward(x_)[0])))
    y, cache = rmsnorm_forward(x)
    dx = rmsnorm_backward(cache, w * jnp.cos(y))
    gradcheck.check_finite_differences(loss, dx, x)


def test_rmsnorm_backward_numpy_jacobian():
    # Independent: explicit Jacobian r (I - y y^T / D) built with numpy for one row.
    x = np.array([0.3, -1.2, 2.0, 0.5])
    dy = np.array([1.0, -2.0, 0.5, 3.0])
    r = 1 / np.sqrt(np.mean(x * x) + 1e-5)
    y = x * r
    jac = r * (np.eye(4) - np.outer(y, y) / 4)
    _, cache = rmsnorm_forward(jnp.asarray(x))
    np.testing.assert_allclose(rmsnorm_backward(cache, jnp.asarray(dy)), jac.T @ dy, rtol=1e-13)
