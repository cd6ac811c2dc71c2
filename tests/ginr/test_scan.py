"""Selective scan: associative == sequential == chunked == a plain numpy loop; gradients vs finite
differences in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, ShapeError
from jaxsys.ginr.scan import selective_scan
from jaxsys.nn.gradcheck import check_finite_differences



def numpy_scan(u, delta, A, B, C, D, z):
    """Independent reference: a loop over batch, time, channel and state."""
    Bn, L, Dd = u.shape
    N = A.shape[1]
    y = np.zeros((Bn, L, Dd))
    for b in range(Bn):
        x = np.zeros((Dd, N))
        for t in range(L):
            for d in range(Dd):
                for n in range(N):
                    x[d, n] = np.exp(delta[b, t, d] * A[d, n]) * x[d, n] + delta[b, t, d] * B[b, t, n] * u[b, t, d]
                y[b, t, d] = x[d].dot(C[b, t]) + D[d] * u[b, t, d]
                y[b, t, d] *= z[b, t, d] / (1 + np.exp(-z[b, t, d]))
    return y


def inputs(seed, Bn=2, L=7, D=3, N=4, dtype=np.float64):
    r = np.random.default_rng(seed)
    return dict(u=r.normal(size=(Bn, L, D)), delta=np.log1p(np.exp(r.normal(size=(Bn, L, D)))),
                A=-np.exp(r.normal(size=(D, N))), B=r.normal(size=(Bn, L, N)), C=r.normal(size=(Bn, L, N)),
                D=r.normal(size=(D,)), z=r.normal(size=(Bn, L, D)))


@pytest.mark.parametrize("kw", [dict(mode="associative"), dict(mode="sequential"),
                                dict(mode="sequential", checkpoint=True), dict(mode="associative", chunk=3),
                                dict(mode="associative", chunk=3, checkpoint=True)])
def test_scan_matches_numpy_loop(kw):
    a = inputs(0)
    ref = numpy_scan(**a)
    out = jax.jit(lambda *t: selective_scan(*t, **kw))(*(jnp.asarray(a[k]) for k in ("u", "delta", "A", "B", "C", "D", "z")))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-11, atol=1e-12)


def test_associative_equals_sequential_float32():
    a = {k: jnp.asarray(v, jnp.float32) for k, v in inputs(1, Bn=3, L=33, D=8, N=16).items()}
    args = [a[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]
    ya = selective_scan(*args, mode="associative")
    ys = selective_scan(*args, mode="sequential")
    assert ya.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ya), np.asarray(ys), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["sequential", "associative"])
def test_scan_gradients_finite_differences(mode):
    a = {k: jnp.asarray(v) for k, v in inputs(2, Bn=2, L=5, D=2, N=3).items()}
    w = jnp.asarray(np.random.default_rng(3).normal(size=a["u"].shape))

    @jax.jit
    def loss(p):
        return jnp.sum(w * selective_scan(p["u"], p["delta"], p["A"], p["B"], p["C"], p["D"], p["z"], mode=mode))
    g = jax.jit(jax.grad(loss))(a)
    check_finite_differences(loss, g, a, num_directions=6, eps=1e-6, rtol=1e-6, atol=1e-9)


def test_sequential_and_associative_gradients_agree():
    a = {k: jnp.asarray(v) for k, v in inputs(4).items()}
    keys = ("u", "delta", "A", "B", "C", "D", "z")
    f = lambda mode: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(selective_scan(*(p[k] for k in keys), mode=mode)))))(a)
    ga, gs = f("associative"), f("sequential")
    for k in a:
        np.testing.assert_allclose(np.asarray(ga[k]), np.asarray(gs[k]), rtol=1e-10, atol=1e-12, err_msg=k)


def test_scan_bad_input():
    a = {k: jnp.asarray(v) for k, v in inputs(5).items()}
    with pytest.raises(ConfigError, match="mode"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], mode="fft")
    with pytest.raises(ShapeError, match="B must be"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"][:, :3], a["C"])
    with pytest.raises(ShapeError, match="A must be"):
        selective_scan(a["u"], a["delta"], a["A"].T, a["B"], a["C"])
