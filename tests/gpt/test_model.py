import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsys.errors import ConfigError, DataError, ShapeError
from jaxsys.gpt import model
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.scalar import Gpt
from jaxsys.nn import gradcheck

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

CFG = GPTConfig(vocab_size=7, n_embd=8, n_head=2, n_layer=2, block_size=8)
TOKENS = np.array([[6, 0, 3, 2, 5, 1], [6, 4, 4, 1, 6, 0]])
TARGETS = np.array([[0, 3, 2, 5, 1, 6], [4, 4, 1, 6, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 0]], np.float64)  # padding + a hole


@pytest.fixture(scope="module", autouse=True)
def _strict_ranks():
    jax.config.update("jax_numpy_rank_promotion", "raise")
    yield
    jax.config.update("jax_numpy_rank_promotion", "allow")


@pytest.fixture(scope="module")
def params():
    return model.init_params(jax.random.PRNGKey(0), CFG, jnp.float64)


@pytest.fixture(scope="module")
def scalar_result(params):
    g = Gpt({k: np.asarray(v) for k, v in params.items()}, CFG.n_layer, CFG.n_head)
    loss, grads = g.loss_and_grads(TOKENS, TARGETS, MASK)
    return g.logits_numpy(TOKENS), loss, grads


def test_init_params_shapes_and_std():
    cfg = GPTConfig(vocab_size=50, n_embd=32, n_head=4, n_layer=2, block_size=64)
    p = model.init_params(jax.random.PRNGKey(1), cfg)
    assert list(p) == list(model.param_shapes(cfg))
    assert p["layer1.mlp_fc1"].shape == (128, 32) and p["layer1.mlp_fc2"].shape == (32, 128)
    assert p["wpe"].shape == (64, 32) and p["lm_head"].shape == (50, 32)
    assert all(v.dtype == jnp.float32 for v in p.values())
    allv = np.concatenate([np.ravel(v) for v in p.values()])
    assert allv.size == model.num_params(cfg)
    assert abs(allv.std() - 0.08) < 0.002 and abs(allv.mean()) < 0.002
    assert not np.allclose(p["wte"][:5], p["lm_head"][:5])  # independent keys, not tied


def test_forward_tensor_scalar_inference_agree(params, scalar_result):
    logits, _ = model.forward(params, jnp.asarray(TOKENS), CFG)
    np.testing.assert_allclose(logits, scalar_result[0], atol=1e-10, rtol=0)
    # causal block skipping in attention (query blocks of 4 over T = 6) computes the same logits
    blocked = jax.jit(lambda p, t: model.forward(p, t, CFG, q_block=4)[0])(params, TOKENS)
    np.testing.assert_allclose(blocked, scalar_result[0], atol=1e-10, rtol=0)
    inf = InferenceModel(params, CFG)
    for b in range(TOKENS.shape[0]):
        np.testing.assert_allclose(inf.sequence_logits(TOKENS[b]), logits[b], atol=1e-10, rtol=0)


def _jit_loss(cfg=CFG, tokens=TOKENS, targets=TARGETS, mask=MASK):
    return jax.jit(lambda p: model.loss_fn(p, jnp.asarray(tokens), jnp.asarray(targets), jnp.asarray(mask), cfg))


def _hand_grads_blocked(p):
    logits, cache = model.forward(p, jnp.asarray(TOKENS), CFG, q_block=4)
    _, xc = model.cross_entropy_forward(logits, jnp.asarray(TARGETS), jnp.asarray(MASK))
    return model.backward(p, cache, model.cross_entropy_backward(xc))


def test_hand_grads_equal_scalar_and_jax_grad(params, scalar_result):
    _, s_loss, s_grads = scalar_result
    loss, hand = model.loss_and_grads(params, TOKENS, TARGETS, MASK, CFG, mode="hand")
    np.testing.assert_allclose(float(loss), s_loss, rtol=1e-12)
    assert set(hand) == set(s_grads) == set(params)
    for k in params:
        np.testing.assert_allclose(hand[k], s_grads[k], atol=1e-9, rtol=1e-9, err_msg=k)
        assert float(jnp.max(jnp.abs(hand[k]))) > 0, k  # every matrix gets a signal
    # the same with causal block skipping (query blocks of 4 over T = 6)
    blocked = jax.jit(_hand_grads_blocked)(params)
    for k in params:
        np.testing.assert_allclose(blocked[k], s_grads[k], atol=1e-9, rtol=1e-9, err_msg=k)
    # positions beyond T never receive gradient
    assert float(jnp.max(jnp.abs(hand["wpe"][6:]))) == 0.0
    # jax.grad of the same forward (gradcheck harness, atol 1e-10 / rtol 1e-9)
    gradcheck.check_grad(_jit_loss(), lambda p: hand, params)
    # and the autodiff mode of loss_and_grads
    ad_loss, ad = model.loss_and_grads(params, TOKENS, TARGETS, MASK, CFG, mode="autodiff")
    np.testing.assert_allclose(float(ad_loss), s_loss, rtol=1e-12)
    chex.assert_trees_all_close(ad, hand, atol=1e-10, rtol=1e-9)


def test_hand_grads_finite_differences(params):
    _, hand = model.loss_and_grads(params, TOKENS, TARGETS, MASK, CFG)
    gradcheck.check_finite_differences(_jit_loss(), hand, params, num_directions=3)


def test_reference_values_identity_layers():
    # Zero attn_wo and mlp_fc2 make each block the identity; lm_head = 0 gives uniform logits,
    # so loss = log V and d lm_head = sum_pos (1/V - onehot(y)) x^T / N, x = rmsnorm(wte + wpe).
    cfg = GPTConfig(vocab_size=5, n_embd=4, n_head=2, n_layer=1, block_size=4)
    rng = np.random.default_rng(0)
    p = {k: rng.normal(size=s) for k, s in model.param_shapes(cfg).items()}
    p["layer0.attn_wo"][:] = 0
    p["layer0.mlp_fc2"][:] = 0
    tokens, targets = np.array([[1, 4, 2]]), np.array([[4, 2, 0]])
    x = p["wte"][tokens[0]] + p["wpe"][:3]
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)
    logits, _ = model.forward(p, jnp.asarray(tokens), cfg)
    np.testing.assert_allclose(logits[0], x @ p["lm_head"].T, rtol=1e-12)
    p["lm_head"][:] = 0
    loss, g = model.loss_and_grads(p, tokens, targets, None, cfg)
    np.testing.assert_allclose(float(loss), np.log(5), rtol=1e-14)
    ref = (np.full((3, 5), 0.2) - np.eye(5)[targets[0]]).T @ x / 3
    np.testing.assert_allclose(g["lm_head"], ref, rtol=1e-12, atol=1e-15)
    # with lm_head = 0 nothing upstream gets gradient
    assert float(jnp.max(jnp.abs(g["wte"]))) == 0.0


def test_five_adam_steps_tensor_equals_scalar(params):
    steps = 5
    sg = Gpt({k: np.asarray(v) for k, v in params.items()}, CFG.n_layer, CFG.n_head)
    opt = optax.adam(optax.linear_schedule(0.01, 0.0, steps), b1=0.85, b2=0.99, eps=1e-8)
    p, state = dict(params), None
    state = opt.init(p)
    for step in range(steps):
        _, grads = model.loss_and_grads(p, TOKENS, TARGETS, MASK, CFG)
        updates, state = opt.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        sg.loss_and_grads(TOKENS, TARGETS, MASK)
        sg.adam_step(step, steps)
    sp = sg.params_numpy()
    moved = 0.0
    for k in params:
        np.testing.assert_allclose(p[k], sp[k], atol=1e-9, rtol=0, err_msg=k)
        moved = max(moved, float(jnp.max(jnp.abs(p[k] - params[k]))))
    assert moved > 0.02  # five steps of lr ~0.01 really moved the weights


def test_float32_path_and_modes_agree():
    cfg = GPTConfig(vocab_size=11, n_embd=16, n_head=4, n_layer=1, block_size=16)
    p = model.init_params(jax.random.PRNGKey(3), cfg, jnp.float32)
    tok = np.random.default_rng(0).integers(0, 11, (2, 16))
    l1, g1 = model.loss_and_grads(p, tok, np.roll(tok, -1, 1), None, cfg, "hand")
    l2, g2 = model.loss_and_grads(p, tok, np.roll(tok, -1, 1), None, cfg, "autodiff")
    assert l1.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in g1.values())
    chex.assert_trees_all_close(g1, g2, atol=2e-6, rtol=1e-3)


def test_bad_inputs(params):
    with pytest.raises(ConfigError, match="block_size=8"):
        model.loss_and_grads(params, np.zeros((1, 9), int), np.zeros((1, 9), int), None, CFG)
    with pytest.raises(DataError, match=r"tokens ids must lie in \[0, 7\)"):
        model.loss_and_grads(params, np.full((1, 3), 7), np.zeros((1, 3), int), None, CFG)
    with pytest.raises(ShapeError, match="targets has shape"):
        model.loss_and_grads(params, np.zeros((1, 3), int), np.zeros((1, 4), int), None, CFG)
    with pytest.raises(ShapeError, match="tokens must be"):
        model.logits_fn(params, np.zeros(3, int), CFG)
    bad = dict(params)
    bad["layer1.mlp_fc1"] = bad["layer1.mlp_fc1"][:, :3]
    with pytest.raises(ShapeError, match="layer1.mlp_fc1"):
        model.loss_and_grads(bad, TOKENS, TARGETS, None, CFG)
    with pytest.raises(DataError, match="integer token ids"):
        model.loss_and_grads(params, TOKENS * 1.0, TARGETS, None, CFG)
    # plain Python lists are accepted (validated as arrays)
    ref, _ = model.loss_and_grads(params, TOKENS, TARGETS, MASK, CFG)
    got, _ = model.loss_and_grads(params, TOKENS.tolist(), TARGETS.tolist(), MASK.tolist(), CFG)
    assert float(got) == float(ref)
    with pytest.raises(ConfigError, match="unknown gradient mode"):
        model.loss_and_grads(params, TOKENS, TARGETS, None, CFG, mode="numeric")


def test_flops_per_token_computed_counts_causal_blocks():
    cfg = GPTConfig(vocab_size=66, n_embd=128, n_head=4, n_layer=6, block_size=512)
    e, t = 128, 512
    matmul = 2 * (6 * 12 * e * e + 66 * e)
    full_attn = 6 * 4 * t * e
    assert model.flops_per_token(cfg, t) == 3.0 * (matmul + full_attn)
    assert model.flops_per_token_computed(cfg, t, q_block=None) == model.flops_per_token(cfg, t)
    # q_block 128: query block i (of 4) sees (i + 1) * 128 keys -> 10/16 of the T x T products
    np.testing.assert_allclose(
        model.flops_per_token_computed(cfg, t, q_block=128), 3.0 * (matmul + full_attn * 10 / 16), rtol=1e-15
    )
