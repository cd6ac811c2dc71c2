"""jaxsys.nn.linear's optional bfloat16 matmul operands: dense/project values and their VJP equal a
float64 numpy computation on the bf16-rounded operands; md None is exactly linear_forward."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.nn import linear as nl

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

RNG = np.random.default_rng(11)


def _bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_normalize_matmul_dtype():
    assert nl.normalize_matmul_dtype(None) is None and nl.normalize_matmul_dtype("float32") is None
    assert nl.normalize_matmul_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ConfigError, match="unknown matmul_dtype 'fp8'"):
        nl.normalize_matmul_dtype("fp8")


def test_dense_float32_is_linear_forward():
    p = {"w": jnp.asarray(RNG.normal(size=(5, 7))), "b": jnp.asarray(RNG.normal(size=5))}
    x = jnp.asarray(RNG.normal(size=(2, 3, 7)))
    np.testing.assert_array_equal(nl.dense(p, x), nl.linear_forward(p, x)[0])
    np.testing.assert_array_equal(nl.dense(p, x, None), nl.linear_forward(p, x)[0])


def test_dense_bf16_values_and_vjp_match_numpy_on_rounded_operands():
    x = RNG.normal(size=(3, 4, 24)).astype(np.float32)
    w = RNG.normal(size=(9, 24)).astype(np.float32)
    b = RNG.normal(size=9).astype(np.float32)
    dy = RNG.normal(size=(3, 4, 9)).astype(np.float32)
    p = {"w": jnp.asarray(w), "b": jnp.asarray(b)}

    def f(p, x):
        return nl.dense(p, x, "bfloat16")

    y, vjp = jax.vjp(f, p, jnp.asarray(x))
    assert y.dtype == jnp.float32
    ref = np.einsum("bti,oi->bto", _bf16(x), _bf16(w)) + b
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    exact = np.einsum("bti,oi->bto", x.astype(np.float64), w.astype(np.float64)) + b
    assert np.max(np.abs(np.asarray(y) - exact)) > 1e-3  # the operands were rounded
    gp, gx = vjp(jnp.asarray(dy))
    assert gx.dtype == jnp.float32 and gp["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(gx), np.einsum("bto,oi->bti", _bf16(dy), _bf16(w)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gp["w"]), np.einsum("bto,bti->oi", _bf16(dy), _bf16(x)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gp["b"]), dy.astype(np.float64).sum((0, 1)), rtol=1e-5, atol=1e-5)
    # the hand-derived pieces give the same numbers as the custom VJP
    np.testing.assert_array_equal(np.asarray(gx), np.asarray(nl.linear_dx(jnp.asarray(dy), p["w"], "bfloat16")))
    np.testing.assert_array_equal(
        np.asarray(gp["w"]), np.asarray(nl.linear_dw(jnp.asarray(dy), jnp.asarray(x), "bfloat16"))
    )


def test_project_bf16_close_to_float32_jax_grad():
    x = jnp.asarray(RNG.normal(size=(6, 16)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(8, 16)).astype(np.float32))

    def loss(w, x, md):
        return jnp.sum(jnp.tanh(nl.project(x, w, md)))

    g32 = jax.grad(loss, argnums=(0, 1))(w, x, None)
    g16 = jax.grad(loss, argnums=(0, 1))(w, x, "bfloat16")
    for a, c in zip(g16, g32):
        rel = float(jnp.linalg.norm(a - c) / jnp.linalg.norm(c))
        assert 1e-5 < rel < 2e-2
