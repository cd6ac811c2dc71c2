"""Selective scan: associative == sequential == chunked (associative inside chunks, or sequential with
chunked recompute and batch groups) == a plain numpy loop; gradients vs finite differences and vs
jax.grad of the associative form in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, ShapeError
from jaxsys.ginr import scan as gscan
from jaxsys.ginr.scan import selective_scan
from jaxsys.nn.gradcheck import check_finite_differences

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


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
    return dict(
        u=r.normal(size=(Bn, L, D)),
        delta=np.log1p(np.exp(r.normal(size=(Bn, L, D)))),
        A=-np.exp(r.normal(size=(D, N))),
        B=r.normal(size=(Bn, L, N)),
        C=r.normal(size=(Bn, L, N)),
        D=r.normal(size=(D,)),
        z=r.normal(size=(Bn, L, D)),
    )


@pytest.fixture
def two_batch_groups(monkeypatch):
    """Make the chunked sequential scan split a batch of 2 into 2 groups (one row each)."""
    monkeypatch.setattr(gscan, "GROUP_STATE_ELEMS", 1)
    yield


KEYS = ("u", "delta", "A", "B", "C", "D", "z")


@pytest.mark.parametrize(
    "kw",
    [
        dict(mode="associative"),
        dict(mode="sequential"),
        dict(mode="sequential", checkpoint=True),
        dict(mode="associative", chunk=3),
        dict(mode="associative", chunk=3, checkpoint=True),
        dict(mode="sequential", chunk=3),  # 7 = 3 + 3 + 1 (+2 padded steps)
        dict(mode="sequential", chunk=7),
    ],
)
def test_scan_matches_numpy_loop(kw):
    a = inputs(0)
    ref = numpy_scan(**a)
    out = jax.jit(lambda *t: selective_scan(*t, **kw))(*(jnp.asarray(a[k]) for k in KEYS))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-11, atol=1e-12)


def test_chunked_sequential_in_batch_groups_matches_numpy_loop(two_batch_groups):
    assert gscan.batch_groups(2, 4, 3) == 2 and gscan.batch_groups(6, 16, 256) == 6
    a = inputs(6, L=9)
    out = jax.jit(lambda *t: selective_scan(*t, mode="sequential", chunk=4))(*(jnp.asarray(a[k]) for k in KEYS))
    np.testing.assert_allclose(np.asarray(out), numpy_scan(**a), rtol=1e-11, atol=1e-12)


def test_batch_groups_rule():
    # per-step state of a group <= GROUP_STATE_ELEMS elements, groups divide the batch
    assert gscan.batch_groups(32, 16, 256) == 8 and gscan.batch_groups(32, 16, 512) == 16
    assert gscan.batch_groups(10, 16, 32) == 1 and gscan.batch_groups(7, 16, 4096) == 7
    assert gscan.batch_groups(12, 16, 512) == 6  # 2 rows fit, 12 % 2 == 0
    assert gscan.batch_groups(32, 16, 512, backend="gpu") == 1  # off CPU: one group, fewer launches
    assert gscan.batch_groups(32, 16, 512, backend="cpu") == 16


def test_associative_equals_sequential_float32():
    a = {k: jnp.asarray(v, jnp.float32) for k, v in inputs(1, Bn=3, L=33, D=8, N=16).items()}
    args = [a[k] for k in KEYS]
    ya = selective_scan(*args, mode="associative")
    ys = selective_scan(*args, mode="sequential")
    yc = selective_scan(*args, mode="sequential", chunk=16)
    assert ya.dtype == jnp.float32 and yc.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ya), np.asarray(ys), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ya), np.asarray(yc), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(mode="sequential"), dict(mode="associative"), dict(mode="sequential", chunk=2)])
def test_scan_gradients_finite_differences(kw, two_batch_groups):
    a = {k: jnp.asarray(v) for k, v in inputs(2, Bn=2, L=5, D=2, N=3).items()}
    w = jnp.asarray(np.random.default_rng(3).normal(size=a["u"].shape))

    @jax.jit
    def loss(p):
        return jnp.sum(w * selective_scan(*(p[k] for k in KEYS), **kw))

    g = jax.jit(jax.grad(loss))(a)
    check_finite_differences(loss, g, a, num_directions=6, eps=1e-6, rtol=1e-6, atol=1e-9)


def test_sequential_and_associative_gradients_agree(two_batch_groups):
    a = {k: jnp.asarray(v) for k, v in inputs(4).items()}
    f = lambda **kw: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(selective_scan(*(p[k] for k in KEYS), **kw)))))(a)
    ga = f(mode="associative")
    for kw in (dict(mode="sequential"), dict(mode="sequential", chunk=3)):  # 7 steps: 3 chunks, padded
        gs = f(**kw)
        for k in a:
            np.testing.assert_allclose(
                np.asarray(ga[k]), np.asarray(gs[k]), rtol=1e-10, atol=1e-12, err_msg=f"{k} {kw}"
            )


def test_scan_bad_input():
    a = {k: jnp.asarray(v) for k, v in inputs(5).items()}
    with pytest.raises(ConfigError, match="mode"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], mode="fft")
    with pytest.raises(ShapeError, match="B must be"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"][:, :3], a["C"])
    with pytest.raises(ShapeError, match="A must be"):
        selective_scan(a["u"], a["delta"], a["A"].T, a["B"], a["C"])


def test_grouped_scan_forward_and_reverse_time_match_numpy_loop():
    """scan_grouped on [G, L, R, .] == the numpy loop on the [B, L, .] layout (b = g R + r); with
    reverse=True it equals the loop over the time-flipped sequence, flipped back (BiMamba's reverse
    branch without flips). (Its gradients: test_mamba's fast-path block vs the reference block.)"""
    a = inputs(7, Bn=4, L=7, D=3, N=4)
    glr = lambda t: jnp.transpose(jnp.asarray(t).reshape(2, 2, *t.shape[1:]), (0, 2, 1, 3))
    back = lambda y: np.asarray(jnp.transpose(y, (0, 2, 1, 3)).reshape(4, *y.shape[1:2], y.shape[-1]))
    ones, zeros = np.ones(3), np.full(a["u"].shape, 30.0)  # D = 1 skip removed below; silu(30) = 30
    for reverse in (False, True):
        fl = (lambda t: t[:, ::-1]) if reverse else (lambda t: t)
        ref = fl(numpy_scan(fl(a["u"]), fl(a["delta"]), a["A"], fl(a["B"]), fl(a["C"]), 0 * ones, zeros)) / 30.0
        y = gscan.scan_grouped(
            glr(a["u"]), glr(a["delta"]), jnp.asarray(a["A"]), glr(a["B"]), glr(a["C"]), chunk=3, reverse=reverse
        )
        np.testing.assert_allclose(back(y), ref, rtol=1e-10, atol=1e-11)
