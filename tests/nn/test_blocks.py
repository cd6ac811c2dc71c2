import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys import nn
from jaxsys.errors import ConfigError
from jaxsys.nn import gradcheck

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


@pytest.fixture
def x():
    return jax.random.normal(jax.random.PRNGKey(3), (5, 7), jnp.float64)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_vjp_and_values(x, bias):
    params = nn.linear_init(jax.random.PRNGKey(0), 7, 4, bias=bias, dtype=jnp.float64)
    if bias:
        params["b"] = jnp.arange(4.0)
    gradcheck.check_vjp(nn.linear_forward, nn.linear_backward, params, x)
    y, _ = nn.linear_forward(params, x)
    ref = np.asarray(x) @ np.asarray(params["w"]).T + (np.arange(4.0) if bias else 0)
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_linear_leading_axes():
    params = nn.linear_init(jax.random.PRNGKey(0), 3, 2, dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 3), jnp.float64)
    gradcheck.check_vjp(nn.linear_forward, nn.linear_backward, params, x)


def test_linear_reference_values():
    # y = x W^T + b by hand; dW = dy^T x, db = sum dy, dx = dy W.
    params = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "b": jnp.array([0.5, -0.5])}
    x = jnp.array([[1.0, 1.0]])
    y, cache = nn.linear_forward(params, x)
    np.testing.assert_allclose(y, [[3.5, 1.5]])
    g, dx = nn.linear_backward(params, cache, jnp.array([[1.0, 2.0]]))
    np.testing.assert_allclose(g["w"], [[1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(g["b"], [1.0, 2.0])
    np.testing.assert_allclose(dx, [[7.0, 0.0]])


@pytest.mark.parametrize("name", ["relu", "tanh", "linear"])
def test_activation_vjp(x, name):
    fwd, bwd = nn.get_activation(name)
    gradcheck.check_vjp(fwd, bwd, None, x)


def test_activation_values():
    y, c = nn.relu_forward(jnp.array([-1.0, 2.0]))
    np.testing.assert_allclose(y, [0.0, 2.0])
    np.testing.assert_allclose(nn.relu_backward(c, jnp.array([5.0, 5.0])), [0.0, 5.0])
    y, c = nn.tanh_forward(jnp.array([0.5]))
    np.testing.assert_allclose(nn.tanh_backward(c, jnp.array([1.0])), [1 - np.tanh(0.5) ** 2])


def test_unknown_activation():
    with pytest.raises(ConfigError, match="unknown activation 'gelu'"):
        nn.get_activation("gelu")


def test_mse(x):
    t = jax.random.normal(jax.random.PRNGKey(9), x.shape, jnp.float64)
    loss, cache = nn.mse_forward(x, t)
    np.testing.assert_allclose(loss, 0.5 * np.sum((np.asarray(x) - np.asarray(t)) ** 2) / 5, rtol=1e-12)
    g = nn.mse_backward(cache)
    gradcheck.check_grad(lambda p: nn.mse_forward(p, t)[0], lambda p: g, x)
    gradcheck.check_finite_differences(lambda p: nn.mse_forward(p, t)[0], g, x)


def test_softmax_cross_entropy(x):
    labels = jnp.array([0, 6, 3, 3, 1])
    loss, cache = nn.softmax_cross_entropy_forward(x, labels)
    xn = np.asarray(x)
    lse = np.log(np.exp(xn).sum(1))
    np.testing.assert_allclose(loss, np.mean(lse - xn[np.arange(5), labels]), rtol=1e-12)
    g = nn.softmax_cross_entropy_backward(cache)
    f = lambda p: nn.softmax_cross_entropy_forward(p, labels)[0]
    gradcheck.check_grad(f, lambda p: g, x)
    gradcheck.check_finite_differences(f, g, x)


@pytest.mark.parametrize("include_input", [True, False])
def test_fourier(include_input):
    p = jax.random.uniform(jax.random.PRNGKey(2), (6, 2), jnp.float64, -1, 1)
    K = 3
    enc = nn.fourier_features(p, K, include_input)
    assert enc.shape == (6, nn.fourier_dim(2, K, include_input))
    pn = np.asarray(p)
    ref = [pn] if include_input else []
    for k in range(K):
        for c in range(2):
            w = 2.0**k * 2 * np.pi
            ref += [np.sin(w * pn[:, c : c + 1]), np.cos(w * pn[:, c : c + 1])]
    np.testing.assert_allclose(enc, np.concatenate(ref, axis=1), rtol=1e-12, atol=1e-12)
    fwd = lambda q: (nn.fourier_features(q, K, include_input), q)
    bwd = lambda q, d: nn.fourier_features_backward(q, d, K, include_input)
    gradcheck.check_vjp(fwd, bwd, None, p)


def test_gradcheck_catches_wrong_gradient(x):
    t = jnp.zeros_like(x)
    f = lambda p: nn.mse_forward(p, t)[0]
    wrong = lambda p: p  # missing the 1/B factor
    with pytest.raises(AssertionError):
        gradcheck.check_grad(f, wrong, x)
    with pytest.raises(AssertionError):
        gradcheck.check_finite_differences(f, wrong(x), x)
