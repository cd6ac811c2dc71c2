import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.nn import gradcheck
from jaxsys.nn.attention import attention_backward, attention_forward, attention_probs

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


def _qkv(b, t, h, d, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return tuple(jax.random.normal(k, (b, t, h, d), jnp.float64) for k in ks)


def _numpy_attention(q, k, v):
    """Loop reference: for each b, h, t: softmax over s <= t of q_t.k_s / sqrt(d), then sum p v."""
    q, k, v = map(np.asarray, (q, k, v))
    b_, t_, h_, d_ = q.shape
    o = np.zeros_like(q)
    for b in range(b_):
        for h in range(h_):
            for t in range(t_):
                sc = np.array([q[b, t, h] @ k[b, s, h] for s in range(t + 1)]) / np.sqrt(d_)
                w = np.exp(sc - sc.max())
                w /= w.sum()
                o[b, t, h] = sum(w[s] * v[b, s, h] for s in range(t + 1))
    return o


fwd = jax.jit(lambda x: attention_forward(*x))
bwd = jax.jit(attention_backward)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 1, 2)])
def test_attention_vjp(shape):
    gradcheck.check_vjp(fwd, bwd, None, _qkv(*shape))


@pytest.mark.parametrize("q_block", [None, 128, 3])
def test_attention_matches_numpy_loop(q_block):
    q, k, v = _qkv(2, 7, 2, 4, seed=3)
    o, cache = jax.jit(attention_forward, static_argnames="q_block")(q, k, v, q_block=q_block)
    np.testing.assert_allclose(o, _numpy_attention(q, k, v), rtol=1e-12, atol=1e-13)
    a = 0
    for p in attention_probs(cache):  # zero above the diagonal, rows sum to one
        n = p.shape[2]
        assert p.shape[3] == a + n
        np.testing.assert_allclose(jnp.sum(p, -1), 1.0, rtol=1e-14)
        assert float(jnp.max(jnp.abs(jnp.triu(p, k=a + 1)))) == 0.0
        a += n
    assert a == 7 and len(cache.e) == (1 if q_block in (None, 128) else -(-7 // q_block))


def test_blocked_attention_vjp():
    gradcheck.check_vjp(jax.jit(lambda x: attention_forward(*x, q_block=3)), bwd, None, _qkv(2, 7, 2, 3, seed=6))


def test_attention_causal_and_first_position():
    q, k, v = _qkv(1, 5, 2, 3, seed=4)
    o, _ = attention_forward(q, k, v)
    np.testing.assert_allclose(o[:, 0], v[:, 0], rtol=1e-14)  # position 0 attends only to itself
    k2, v2 = k.at[:, 3:].add(5.0), v.at[:, 3:].add(-7.0)
    o2, _ = attention_forward(q, k2, v2)
    np.testing.assert_allclose(o2[:, :3], o[:, :3], rtol=1e-14)


def test_attention_finite_differences():
    qkv = _qkv(1, 4, 2, 3, seed=5)
    w = jax.random.normal(jax.random.PRNGKey(9), (1, 4, 2, 3), jnp.float64)
    loss = jax.jit(lambda x: jnp.sum(w * attention_forward(*x, q_block=2)[0] ** 2))
    o, cache = attention_forward(*qkv, q_block=2)
    grads = bwd(cache, 2 * w * o)
    gradcheck.check_finite_differences(loss, grads, qkv)


def test_attention_backward_reference_values():
    # T=2, one head, Dh=1: s_10 = q1 k0, s_11 = q1 k1; p_1 = softmax; o_1 = p10 v0 + p11 v1.
    q = jnp.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    k = jnp.array([0.0, np.log(3.0)]).reshape(1, 2, 1, 1)
    v = jnp.array([2.0, 6.0]).reshape(1, 2, 1, 1)
    o, cache = attention_forward(q, k, v)
    # p_1 = (1/4, 3/4) -> o_1 = 0.5 + 4.5 = 5
    np.testing.assert_allclose(o.ravel(), [2.0, 5.0], rtol=1e-14)
    dq, dk, dv = attention_backward(cache, jnp.array([0.0, 1.0]).reshape(1, 2, 1, 1))
    # dv = p_1 = (1/4, 3/4); dp_1s = v_s = (2, 6); row = o_1 = 5; ds_1 = p (dp - 5) = (-3/4, 3/4)
    np.testing.assert_allclose(dv.ravel(), [0.25, 0.75], rtol=1e-14)
    # dq_1 = sum_s ds_1s k_s = 3/4 log 3; dk_0 = ds_10 q_1 = -3/4; dk_1 = 3/4
    np.testing.assert_allclose(dq.ravel(), [0.0, 0.75 * np.log(3.0)], rtol=1e-14)
    np.testing.assert_allclose(dk.ravel(), [-0.75, 0.75], rtol=1e-14)
