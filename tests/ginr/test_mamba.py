"""Mamba mixer defaults, causality, BiMamba flip and kwargs, residual block."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.ginr import mamba as mb

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

mamba_apply = jax.jit(mb.mamba_apply, static_argnames=("scan_mode", "chunk", "checkpoint"))
bimamba_apply = jax.jit(mb.bimamba_apply, static_argnames=("scan_mode", "chunk", "checkpoint", "fuse_directions"))


def test_mamba_init_defaults():
    p = mb.mamba_init(jax.random.PRNGKey(0), 40)
    d_inner, rank = 80, math.ceil(40 / 16)
    assert p["in_proj"]["w"].shape == (2 * d_inner, 40) and "b" not in p["in_proj"]
    assert "b" not in p["out_proj"] and "b" not in p["x_proj"]
    assert p["x_proj"]["w"].shape == (rank + 32, d_inner)
    assert p["conv_w"].shape == (d_inner, 4) and p["conv_b"].shape == (d_inner,)
    np.testing.assert_allclose(np.exp(p["A_log"][5]), np.arange(1, 17), rtol=1e-6)
    np.testing.assert_array_equal(p["D"], 1.0)
    dt = np.log1p(np.exp(np.asarray(p["dt_proj"]["b"], np.float64)))  # softplus(bias) = dt0
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


def test_causal_conv_matches_numpy():
    r = np.random.default_rng(0)
    x, w, b = r.normal(size=(2, 6, 3)), r.normal(size=(3, 4)), r.normal(size=3)
    ref = np.zeros_like(x)
    for t in range(6):
        for k in range(4):
            s = t - 3 + k
            if s >= 0:
                ref[:, t] += w[:, k] * x[:, s]
    ref += b
    np.testing.assert_allclose(
        np.asarray(mb.causal_depthwise_conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))),
        ref,
        rtol=1e-12,
        atol=1e-12,
    )


def test_mamba_is_causal():
    p = mb.mamba_init(jax.random.PRNGKey(1), 8, d_state=4)
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 6, 8))
    x2 = x.at[:, 4:].set(jax.random.normal(jax.random.PRNGKey(3), (1, 2, 8)))
    y, y2 = mamba_apply(p, x, scan_mode="sequential"), mamba_apply(p, x2, scan_mode="sequential")
    np.testing.assert_allclose(np.asarray(y[:, :4]), np.asarray(y2[:, :4]), atol=1e-12)
    assert not np.allclose(np.asarray(y[:, 4:]), np.asarray(y2[:, 4:]))


def test_bimamba_flip_and_kwargs():
    p = mb.bimamba_init(jax.random.PRNGKey(4), 8, d_state=4)
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 5, 8))
    kw = dict(scan_mode="sequential")
    ref = (mamba_apply(p["f"], x, **kw) + mamba_apply(p["r"], x[:, ::-1], **kw)[:, ::-1]) / 2
    keep = np.array([0, 2, 3])
    for fuse in (True, False):
        f = jax.jit(
            lambda p, x, fuse=fuse: mb.bimamba_apply(
                p, x, fuse_directions=fuse, inference_params=None, foo="ignored", **kw
            )
        )
        out = f(p, x)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-12, atol=1e-12)
        # keep: only some output positions (the model's last block), equal to slicing the full output
        fk = jax.jit(lambda p, x, fuse=fuse: mb.bimamba_apply(p, x, fuse_directions=fuse, keep=keep, **kw))
        np.testing.assert_allclose(np.asarray(fk(p, x)), np.asarray(ref)[:, keep], rtol=1e-12, atol=1e-12)
    # with equal weights the layer commutes with reversing the sequence
    ps = {"f": p["f"], "r": p["f"]}
    np.testing.assert_allclose(
        np.asarray(bimamba_apply(ps, x[:, ::-1], **kw)),
        np.asarray(bimamba_apply(ps, x, **kw)[:, ::-1]),
        rtol=1e-12,
        atol=1e-12,
    )
    # distinct weights: the reversed output differs (the backward branch really sees flipped input)
    assert not np.allclose(
        np.asarray(bimamba_apply(p, x[:, ::-1], **kw)), np.asarray(bimamba_apply(p, x, **kw)[:, ::-1])
    )


def test_block_residual_structure():
    p = mb.block_init(jax.random.PRNGKey(6), 8, 16, d_state=4)
    x = jax.random.normal(jax.random.PRNGKey(7), (1, 4, 8))
    r0 = jax.random.normal(jax.random.PRNGKey(8), (1, 4, 8))
    h, res = jax.jit(mb.block_apply, static_argnames="scan_mode")(p, x, r0, scan_mode="sequential")
    res1 = x + r0
    mix = bimamba_apply(p["mixer"], jax.jit(mb.layernorm)(p["norm"], res1), scan_mode="sequential")
    np.testing.assert_allclose(np.asarray(res), np.asarray(res1 + mix), atol=1e-12)
    ln = np.asarray(res1 + mix)
    ln = (ln - ln.mean(-1, keepdims=True)) / np.sqrt(ln.var(-1, keepdims=True) + 1e-5)
    hid = ln @ np.asarray(p["mlp"]["fc1"]["w"]).T + np.asarray(p["mlp"]["fc1"]["b"])
    erf = np.vectorize(math.erf)
    hid = 0.5 * hid * (1 + erf(hid / math.sqrt(2)))
    out = hid @ np.asarray(p["mlp"]["fc2"]["w"]).T + np.asarray(p["mlp"]["fc2"]["b"])
    np.testing.assert_allclose(np.asarray(h), out, rtol=1e-10, atol=1e-10)
    keep = np.array([1, 3])
    hk, rk = jax.jit(lambda p, x, r: mb.block_apply(p, x, r, keep=keep, scan_mode="sequential"))(p, x, r0)
    np.testing.assert_allclose(np.asarray(hk), out[:, keep], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(rk), np.asarray(res)[:, keep], atol=1e-12)


def _to_glr(x, G):  # [B, L, C] -> [G, L, R, C] with b = g R + r
    B, L, C = x.shape
    return jnp.transpose(x.reshape(G, B // G, L, C), (0, 2, 1, 3))


def _from_glr(y):
    G, L, R, C = y.shape
    return jnp.transpose(y, (0, 2, 1, 3)).reshape(G * R, L, C)


def test_anti_causal_conv_is_flipped_causal_conv():
    r = np.random.default_rng(9)
    x, w, b = r.normal(size=(4, 7, 3)), r.normal(size=(3, 4)), r.normal(size=3)
    ref = mb.causal_depthwise_conv(jnp.asarray(x[:, ::-1]), jnp.asarray(w), jnp.asarray(b))[:, ::-1]
    out = _from_glr(mb._shift_conv(_to_glr(jnp.asarray(x), 2), jnp.asarray(w), jnp.asarray(b), anti_causal=True))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_glr_block_equals_reference_block_values_and_gradients():
    """The encoder's fast path ([G, L, R, dim] tokens, no flips, reverse-time scan) == block_apply with
    BiMamba's explicit flips on [B, L, dim] (sequential scan, no chunks): outputs, kept positions and gradients
    (float64)."""
    p = mb.block_init(jax.random.PRNGKey(10), 8, 16, d_state=4)
    x = jax.random.normal(jax.random.PRNGKey(11), (4, 7, 8))
    r0 = jax.random.normal(jax.random.PRNGKey(12), (4, 7, 8))
    keep = np.array([0, 3, 6])

    def ref(p, x, r0):
        h, res = mb.block_apply(p, x, r0, scan_mode="sequential")
        return jnp.sum(jnp.sin(h)) + jnp.sum(res**2), (h, res)

    def glr(p, x, r0):
        h, res = map(_from_glr, mb.block_apply_glr(p, _to_glr(x, 2), _to_glr(r0, 2), chunk=3))
        return jnp.sum(jnp.sin(h)) + jnp.sum(res**2), (h, res)

    (lr, outs_r), gr = jax.jit(jax.value_and_grad(ref, argnums=(0, 1), has_aux=True))(p, x, r0)
    (lg, outs_g), gg = jax.jit(jax.value_and_grad(glr, argnums=(0, 1), has_aux=True))(p, x, r0)
    for a, b in zip(outs_g, outs_r):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(gg), jax.tree_util.tree_leaves(gr)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-11)
    # keep (the last block: LP positions only) == the full block's output at those positions
    hk, rk = jax.jit(lambda p, x, r: mb.block_apply_glr(p, _to_glr(x, 2), _to_glr(r, 2), keep=keep, chunk=3))(p, x, r0)
    np.testing.assert_allclose(np.asarray(_from_glr(hk)), np.asarray(outs_r[0])[:, keep], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(_from_glr(rk)), np.asarray(outs_r[1])[:, keep], rtol=1e-10, atol=1e-12)
