"""Model: LP placement round trip, batch independence of decoding, shapes, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, ShapeError
from jaxsys.ginr import model as gm

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

encode = jax.jit(gm.encode, static_argnums=2)
decode = jax.jit(gm.decode, static_argnums=3)
TINY = gm.GinrConfig(image_size=8, patch_size=2, dim=16, num_lp=4, depth=1, hidden=8, num_freqs=3, d_state=4)


@pytest.fixture(scope="module")
def tiny():
    params = gm.init_params(jax.random.key(0), TINY)
    imgs = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3), jnp.float64)
    lp = encode(params, imgs, TINY)
    return params, imgs, lp


@pytest.mark.parametrize("placement", gm.PLACEMENTS)
@pytest.mark.parametrize("P,M", [(64, 16), (16, 4), (10, 7), (5, 1), (16, 32), (4, 9)])
def test_lp_round_trip(placement, P, M):
    cfg = dataclasses.replace(TINY, lp_placement=placement, lp_groups=min(3, M), num_lp=M)
    pos = gm.lp_positions(P, M, placement, min(3, M))
    assert len(pos) == M and np.all(np.diff(pos) > 0) and pos[0] >= 0 and pos[-1] < P + M
    tokens = jnp.arange(2 * P * 3, dtype=jnp.float64).reshape(2, P, 3)
    lp = -1.0 - jnp.arange(M * 3, dtype=jnp.float64).reshape(M, 3)
    g = int(np.sqrt(P))
    if g * g == P:
        c = dataclasses.replace(cfg, image_size=g * 2, patch_size=2)
        seq = gm.insert_lp(tokens, lp, c)
        np.testing.assert_array_equal(gm.read_lp(seq, c), jnp.broadcast_to(lp, (2, M, 3)))
        np.testing.assert_array_equal(gm.read_patches(seq, c), tokens)
        np.testing.assert_array_equal(np.nonzero(np.asarray(seq[0, :, 0]) < 0)[0], pos)


def test_equidistant_matches_reference_formula():
    # torch.linspace(0, T - 1, M).long(): positions i * (T - 1) / (M - 1) truncated
    P, M = 64, 16
    ref = [int(i * (P + M - 1) / (M - 1)) for i in range(M)]
    np.testing.assert_array_equal(gm.lp_positions(P, M, "equidistant"), ref)
    assert list(gm.lp_positions(64, 4, "middle")) == [32, 33, 34, 35]


def test_decoding_is_independent_across_queries(tiny):
    params, imgs, lp = tiny
    r = np.random.default_rng(0)
    c1 = jnp.asarray(r.uniform(-1, 1, (2, 5, 2)))
    c2 = jnp.asarray(r.uniform(-1, 1, (2, 9, 2)))
    both = decode(params, lp, jnp.concatenate([c1, c2], 1), TINY)
    sep = jnp.concatenate([decode(params, lp, c1, TINY), decode(params, lp, c2, TINY)], 1)
    np.testing.assert_allclose(np.asarray(both), np.asarray(sep), atol=1e-6, rtol=0)
    one = decode(params, lp[:1], c1[:1, 2:3], TINY)
    np.testing.assert_allclose(np.asarray(both[:1, 2:3]), np.asarray(one), atol=1e-12)


def test_jacobian_across_queries_is_zero(tiny):
    params, imgs, lp = tiny
    c = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 6, 2)))
    J = jax.jit(jax.jacfwd(lambda cc: gm.decode(params, lp[:1], cc, TINY)))(c)[0, :, :, 0]  # [N, 3, N, 2]
    N = c.shape[1]
    for n in range(N):
        for m in range(N):
            blk = np.asarray(J[n, :, m])
            if n == m:
                assert np.abs(blk).max() > 0  # each output does depend on its own coordinate
            else:
                np.testing.assert_array_equal(blk, 0.0)


def test_encode_equals_full_blocks_then_read_lp(tiny):
    """encode runs its last block on the LP tokens only; the reference runs every block on every token
    and reads the LP positions at the end."""
    from jaxsys.ginr.mamba import block_apply, layernorm

    params, imgs, lp = tiny
    cfg = TINY  # depth 1: the only block is the last one

    def reference(p, x):
        e = p["encoder"]
        tok = gm.dense(e["patch_embed"], gm.patchify(x * 2 - 1, cfg.patch_size))
        tok = tok + gm.dense(
            e["pos_proj"], gm.fourier_features(gm.pixel_grid(cfg.grid, dtype=tok.dtype), cfg.num_freqs)
        )
        h, res = gm.insert_lp(tok, e["lp"], cfg), None
        for bp in e["blocks"]:
            h, res = block_apply(bp, h, res, scan_mode="associative")
        return gm.read_lp(layernorm(e["norm_f"], h + res), cfg)

    np.testing.assert_allclose(np.asarray(lp), np.asarray(jax.jit(reference)(params, imgs)), rtol=1e-10, atol=1e-12)


def test_apply_shapes_and_range(tiny):
    params, imgs, lp = tiny
    assert lp.shape == (2, 4, 16)
    out = jax.jit(gm.render, static_argnums=(2, 3))(params, imgs, TINY, 2)
    assert out.shape == (2, 16, 16, 3)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    grid = gm.pixel_grid(4)
    np.testing.assert_allclose(np.asarray(grid[:2]), [[-0.75, -0.75], [-0.75, -0.25]])


def test_bad_input(tiny):
    params, imgs, lp = tiny
    with pytest.raises(ShapeError, match="expected \\[B, 8, 8, 3\\]"):
        gm.apply(params, jnp.zeros((2, 16, 16, 3)), jnp.zeros((2, 4, 2)), TINY)
    with pytest.raises(ShapeError, match="\\[-1, 1\\]"):
        gm.apply(params, imgs, jnp.full((2, 4, 2), 1.5), TINY)
    with pytest.raises(ShapeError, match="\\[B, N, 2\\]"):
        gm.apply(params, imgs, jnp.zeros((2, 4, 3)), TINY)
    with pytest.raises(ShapeError, match="2 images but coords for 1"):
        gm.apply(params, imgs, jnp.zeros((1, 4, 2)), TINY)
    with pytest.raises(ConfigError, match="unknown ginr config"):
        gm.get_config("huge")
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        gm.get_config("fast", patch_size=5)
    with pytest.raises(ConfigError, match="lp_placement"):
        gm.get_config("fast", lp_placement="random")


def test_cpu_config_shapes_independence_and_gradients():
    """The `cpu` config (as many LP tokens as patches, or more) at its real size: encoder output
    [B, num_lp, dim], decoding independent across coordinates, and jax.grad of the training loss
    against a central finite difference along a random direction (float64)."""
    mc = gm.get_config("cpu")
    assert mc.num_lp >= mc.num_patches
    params = gm.init_params(jax.random.key(0), mc)
    r = np.random.default_rng(0)
    imgs = jnp.asarray(r.uniform(0, 1, (2, 32, 32, 3)))
    lp = encode(params, imgs, mc)
    assert lp.shape == (2, mc.num_lp, mc.dim) and lp.dtype == jnp.float64
    c1, c2 = jnp.asarray(r.uniform(-1, 1, (2, 7, 2))), jnp.asarray(r.uniform(-1, 1, (2, 5, 2)))
    both = decode(params, lp, jnp.concatenate([c1, c2], 1), mc)
    sep = jnp.concatenate([decode(params, lp, c1, mc), decode(params, lp, c2, mc)], 1)
    np.testing.assert_allclose(np.asarray(both), np.asarray(sep), atol=1e-6, rtol=0)
    coords = jnp.concatenate([c1, c2], 1)
    targets = jnp.asarray(r.uniform(0, 1, (2, 12, 3)))

    def loss(p):
        return jnp.mean((gm.decode(p, gm.encode(p, imgs, mc), coords, mc) - targets) ** 2)

    g = jax.jit(jax.grad(loss))(params)
    leaves, tree = jax.tree_util.tree_flatten(params)
    d = jax.tree_util.tree_unflatten(tree, [jnp.asarray(r.standard_normal(x.shape)) for x in leaves])
    eps = 1e-5
    shift = lambda s: jax.tree_util.tree_map(lambda x, v: x + s * eps * v, params, d)
    fd = (jax.jit(loss)(shift(1.0)) - jax.jit(loss)(shift(-1.0))) / (2 * eps)
    an = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d)))
    assert abs(float(an) - float(fd)) <= 1e-6 * abs(float(fd)) + 1e-10


def test_config_sizes():
    n = {
        k: gm.num_params(jax.eval_shape(lambda k=k: gm.init_params(jax.random.key(0), gm.CONFIGS[k])))
        for k in ("cpu", "fast", "balanced")
    }
    assert 0.3e6 < n["cpu"] < 0.5e6 and 1.0e6 < n["fast"] < 1.3e6 and 5.5e6 < n["balanced"] < 6.5e6


def test_bf16_matmul_operands_close_to_float32(tiny):
    """matmul_dtype="bfloat16": every weight matmul on bf16 operands (float32 accumulation); outputs
    and jax.grad gradients stay within bf16 rounding of the float32 model."""
    params, imgs, _ = tiny
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    x32 = imgs.astype(jnp.float32)
    c = jnp.asarray(np.random.default_rng(5).uniform(-1, 1, (2, 7, 2)), jnp.float32)
    bf = dataclasses.replace(TINY, matmul_dtype="bfloat16")

    def loss(p, cfg):
        return jnp.mean((gm.apply(p, x32, c, cfg) - 0.3) ** 2)

    (l32, g32), (l16, g16) = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(p32, cfg) for cfg in (TINY, bf))
    y32, y16 = gm.apply(p32, x32, c, TINY), gm.apply(p32, x32, c, bf)
    d = float(jnp.abs(y16 - y32).max())
    assert 1e-6 < d < 1e-2 and y16.dtype == jnp.float32
    assert abs(float(l16) - float(l32)) < 1e-2 * float(l32)
    f32 = jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(g32)])
    f16 = jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(g16)])
    assert float(jnp.linalg.norm(f16 - f32) / jnp.linalg.norm(f32)) < 3e-2
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(g16))
    with pytest.raises(ConfigError, match="matmul_dtype"):
        gm.get_config("fast", matmul_dtype="float16")


def test_bad_api_input_gives_clear_errors(tiny):
    from jaxsys.errors import DataError

    params, imgs, lp = tiny
    with pytest.raises(ShapeError, match="at least one coordinate"):
        gm.apply(params, imgs, jnp.zeros((2, 0, 2)), TINY)
    for scale in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="scale must be an int >= 1"):
            gm.render(params, imgs, TINY, scale)
    # just outside the range: the message shows the real value, not a rounded "1"
    with pytest.raises(ShapeError, match="got range \\[0, 1.00001\\]"):
        gm.apply(params, imgs, jnp.full((2, 4, 2), 1 + 1e-5), TINY)
    with pytest.raises(DataError, match="uint8"):
        gm.apply(params, (np.asarray(imgs) * 255).astype(np.uint8), jnp.zeros((2, 4, 2)), TINY)
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        gm.apply(params, imgs * 255, jnp.zeros((2, 4, 2)), TINY)
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        gm.render(params, imgs - 0.5, TINY, 1)
