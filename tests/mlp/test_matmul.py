"""Pallas tiled matmul (interpret mode on CPU) vs jnp.dot and a numpy reference, on ragged shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ShapeError
from jaxsys.mlp.matmul import matmul

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

# (M, K, N, bm, bn, bk): ragged against the tiles in every dimension, one exact fit, one tiny
SHAPES = [(37, 50, 19, 16, 16, 16), (64, 32, 48, 32, 16, 16), (1, 3, 2, 64, 64, 32), (70, 33, 130, 32, 64, 16)]


@pytest.mark.parametrize("M,K,N,bm,bn,bk", SHAPES)
def test_matmul_float64_vs_dot(M, K, N, bm, bn, bk):
    rng = np.random.default_rng(M * 1000 + N)
    a, b = rng.normal(size=(M, K)), rng.normal(size=(K, N))
    c = matmul(jnp.asarray(a), jnp.asarray(b), bm=bm, bn=bn, bk=bk)
    assert c.shape == (M, N) and c.dtype == jnp.float64
    np.testing.assert_allclose(c, jnp.dot(jnp.asarray(a), jnp.asarray(b)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)


def test_matmul_float32():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(45, 70)).astype(np.float32)
    b = rng.normal(size=(70, 23)).astype(np.float32)
    c = matmul(jnp.asarray(a), jnp.asarray(b), bm=16, bn=16, bk=32)
    assert c.dtype == jnp.float32
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-4)


def test_matmul_interprets_on_cpu_by_default():
    assert jax.default_backend() == "cpu"
    a = jnp.ones((3, 4))
    # interpret=None picks the interpreter on CPU; asking for compilation on CPU is not supported
    np.testing.assert_allclose(matmul(a, a.T), 4 * np.ones((3, 3)))
    with pytest.raises(Exception):
        matmul(a, a.T, interpret=False).block_until_ready()


def test_matmul_shape_errors():
    with pytest.raises(ShapeError, match=r"A \[M x K\] and B \[K x N\], got \[3, 4\] and \[5, 2\]"):
        matmul(jnp.ones((3, 4)), jnp.ones((5, 2)))
    with pytest.raises(ShapeError):
        matmul(jnp.ones((3,)), jnp.ones((3, 2)))
