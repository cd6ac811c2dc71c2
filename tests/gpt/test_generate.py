"""Jitted KV-cache generation (jaxsys/gpt/generate.py) against the float64 numpy inference model,
the tensor-engine forward, and hand-built reference values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import generate as G
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.model import forward
from jaxsys.gpt.tokenizer import Tokenizer

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


TOK = Tokenizer(list("abcdefgh"), chat=True)  # vocab 12: user 8, assistant 9, end_turn 10, BOS 11
CFG = GPTConfig(vocab_size=TOK.vocab_size, n_embd=16, n_head=2, n_layer=2, block_size=24)


def random_params(cfg: GPTConfig, seed=0, std=0.4) -> dict:
    """Larger than the 0.08 init so that the distributions are far from uniform (varied outputs)."""
    rng = np.random.default_rng(seed)
    E, V = cfg.n_embd, cfg.vocab_size
    p = {
        "wte": rng.normal(0, std, (V, E)),
        "wpe": rng.normal(0, std, (cfg.block_size, E)),
        "lm_head": rng.normal(0, std, (V, E)),
    }
    for i in range(cfg.n_layer):
        for n in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
            p[f"layer{i}.{n}"] = rng.normal(0, std, (E, E))
        p[f"layer{i}.mlp_fc1"] = rng.normal(0, std, (4 * E, E))
        p[f"layer{i}.mlp_fc2"] = rng.normal(0, std, (E, 4 * E))
    return p


@pytest.fixture(scope="module")
def params():
    return random_params(CFG)


@pytest.fixture(scope="module")
def ref(params):
    return InferenceModel(params, CFG, TOK)


PROMPTS = [[11], [11, 8, 0, 1, 2, 10, 9], [11, 8, 3, 3, 10, 9, 4, 10, 8, 5, 6, 7, 10, 9]]
STOPS = (10, 11)


@pytest.mark.parametrize("n", [1, 2, 7, 17, 24])  # 24 = block_size: prefilled in the last bucket
def test_prefill_equals_token_by_token_feeding(params, n):
    """prefill_row writes the same keys/values for positions 0..n-2 as n - 1 decode steps, and leaves
    the row at its last prompt token; a one-token prompt is left to the decode step."""
    dev = G.to_device_params(params, jnp.float64)
    prompt = list(np.random.default_rng(n).integers(0, CFG.vocab_size, n))
    states = []
    for _ in range(2):
        hs = G.HostState(CFG, 2, np.float64)
        hs.place(1, prompt, 1, 0.0, np.zeros(CFG.block_size), [])
        states.append(hs)
    kv_a = G.prefill_row(dev, G.init_kv(CFG, 2, jnp.float64), states[0], 1, CFG)
    assert int(states[0].pos[1]) == max(n - 1, 0)
    kv_b, st = G.advance(
        dev, G.init_kv(CFG, 2, jnp.float64), states[1].to_device(), jnp.int32(n - 1), cfg=CFG, attn_len=CFG.block_size
    )
    assert int(st.pos[1]) == n - 1
    for (ka, va), (kb, vb) in zip(kv_a, kv_b):
        for a, b in ((ka, kb), (va, vb)):
            np.testing.assert_allclose(
                np.asarray(a[1, :, : n - 1]), np.asarray(b[1, :, : n - 1]), rtol=1e-12, atol=1e-12
            )


def test_decode_step_logits_equal_tensor_forward(params):
    """Feeding a sequence token by token through the KV cache gives the full forward's logits."""
    tokens = np.array([[11, 8, 0, 1, 2, 10, 9, 3, 4, 5, 6, 7, 0, 0, 1]])
    with jax.numpy_rank_promotion("allow"):  # the tensor engine's own broadcasting is not under test
        full, _ = forward({k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(tokens), CFG)
    kv = G.init_kv(CFG, 1, jnp.float64)
    step = jax.jit(G.decode_step, static_argnames="cfg")
    dev = G.to_device_params(params, jnp.float64)
    for t in range(tokens.shape[1]):
        logits, kv = step(dev, kv, jnp.asarray(tokens[:, t]), jnp.asarray([t]), cfg=CFG)
        np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(full[0, t]), rtol=0, atol=1e-10)


def test_greedy_batch_equals_numpy_inference(params, ref):
    outs = G.generate_batch(params, CFG, PROMPTS, 12, greedy=True, stop_ids=STOPS, dtype=jnp.float64)
    for p, g in zip(PROMPTS, outs):
        expect = ref.generate_from_prompt(p, 12, greedy=True, stop_ids=list(STOPS))
        assert g.tokens == list(expect)
    # without stop tokens every row runs to its budget or to the end of the block
    outs = G.generate_batch(params, CFG, PROMPTS, 30, greedy=True, dtype=jnp.float64)
    for p, g in zip(PROMPTS, outs):
        assert g.tokens == ref.generate_from_prompt(p, 30, greedy=True, stop_ids=[])
        assert len(g.tokens) == CFG.block_size + 1 - len(p) and g.finish_reason == "length"


@pytest.mark.parametrize("temperature", [0.6, 1.3])
def test_seeded_sampling_equals_numpy_inference(params, ref, temperature):
    seeds = [3, 4, 5]
    outs = G.generate_batch(
        params, CFG, PROMPTS, 10, temperature=temperature, seeds=seeds, stop_ids=STOPS, dtype=jnp.float64
    )
    for p, s, g in zip(PROMPTS, seeds, outs):
        expect = ref.generate_from_prompt(p, 10, temperature=temperature, seed=s, stop_ids=list(STOPS))
        assert g.tokens == list(expect)
    # different seeds give different samples somewhere (the test can fail on a seed mix-up)
    same = G.generate_batch(
        params, CFG, [PROMPTS[1]] * 4, 10, temperature=temperature, seeds=[3, 4, 5, 6], dtype=jnp.float64
    )
    assert len({tuple(g.tokens) for g in same}) > 1


def test_explicit_uniforms_equal_numpy_inference(params, ref):
    u = np.random.default_rng(99).random((3, 20))
    outs = G.generate_batch(
        params, CFG, PROMPTS, 9, temperature=1.0, uniforms=list(u), stop_ids=STOPS, dtype=jnp.float64
    )
    for p, uu, g in zip(PROMPTS, u, outs):
        assert g.tokens == list(ref.generate_from_prompt(p, 9, temperature=1.0, uniforms=uu, stop_ids=list(STOPS)))


def counting_params(V=6, E=6, T=10):
    """Layers are zero (residual identity), wte is the identity, wpe 0 and lm_head[(t+1) % V, t] = 1:
    the logits after token t are maximal at t+1, and softmax(logits) is known in closed form."""
    cfg = GPTConfig(vocab_size=V, n_embd=E, n_head=2, n_layer=1, block_size=T)
    p = {"wte": np.eye(V, E), "wpe": np.zeros((T, E)), "lm_head": np.zeros((V, E))}
    for t in range(V):
        p["lm_head"][(t + 1) % V, t] = 1.0
    for n in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
        p[f"layer0.{n}"] = np.zeros((E, E))
    p["layer0.mlp_fc1"], p["layer0.mlp_fc2"] = np.zeros((4 * E, E)), np.zeros((E, 4 * E))
    return p, cfg


def test_counting_model_reference_values():
    p, cfg = counting_params()
    outs = G.generate_batch(p, cfg, [[0], [2, 3], [4]], 7, greedy=True, stop_ids=[5], dtype=jnp.float64)
    assert outs[0] == G.Generation([1, 2, 3, 4], "stop")  # 5 is the stop token (not returned)
    assert outs[1] == G.Generation([4], "stop")
    assert outs[2] == G.Generation([], "stop")
    # no stop token: max_new_tokens, then the end of the block (10 positions) ends a row
    outs = G.generate_batch(p, cfg, [[0], [1, 2, 3, 4, 5], [3], [5] * 9], 7, greedy=True, dtype=jnp.float64)
    assert outs[0] == G.Generation([1, 2, 3, 4, 5, 0, 1], "length")
    # the block holds 10 positions; the token sampled after the last one is still emitted
    assert outs[1] == G.Generation([0, 1, 2, 3, 4, 5], "length")
    assert outs[2] == G.Generation([4, 5, 0, 1, 2, 3, 4], "length")
    assert outs[3] == G.Generation([0, 1], "length")
    # sampling: after token 0 with rmsnorm, x = sqrt(6) e_0, so logits = sqrt(6) e_1 and
    # P(1) = e^s / (e^s + 5), s = sqrt(6) / T; u just below / above P(0) + P(1) picks 1 / 2
    s = np.sqrt(6.0 / (1 + 6e-5)) / 0.5  # rmsnorm: x / sqrt(mean(x^2) + 1e-5), mean = 1/6
    p1 = np.exp(s) / (np.exp(s) + 5)
    p0 = 1 / (np.exp(s) + 5)
    cases = [
        (p0 - 1e-9, 0),
        (p0 + 1e-9, 1),
        (p0 + p1 - 1e-9, 1),
        (p0 + p1 + 1e-9, 2),
        (1 - 1e-12, 5),
        (0.0, 0),
        (0.5, 1),
        (p0 + p1 + 3 * p0 + 1e-9, 5),
    ]
    for i in range(0, len(cases), 4):  # four rows per call: the batch shape compiled above
        got = G.generate_batch(
            p, cfg, [[0]] * 4, 1, temperature=0.5, uniforms=[[u] for u, _ in cases[i : i + 4]], dtype=jnp.float64
        )
        assert [g.tokens for g in got] == [[w] for _, w in cases[i : i + 4]]


def test_no_recompilation_for_same_batch_bucket(params):
    G.generate_batch(params, CFG, PROMPTS, 4, greedy=True, dtype=jnp.float64)
    n = G.advance._cache_size()
    G.generate_batch(
        params, CFG, [[11, 0], [11, 1, 2, 3], [11]], 6, temperature=0.9, seeds=[1, 2, 3], dtype=jnp.float64
    )
    assert G.advance._cache_size() == n


def test_bad_inputs(params):
    with pytest.raises(DataError, match="empty"):
        G.generate(params, CFG, [], 3)
    with pytest.raises(ConfigError, match="block_size"):
        G.generate(params, CFG, [11] * (CFG.block_size + 1), 3)
    with pytest.raises(DataError, match="outside the vocabulary"):
        G.generate(params, CFG, [11, 99], 3)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        G.generate(params, CFG, [11], 0)
    with pytest.raises(ConfigError, match="temperature"):
        G.generate(params, CFG, [11], 3, temperature=0.0)
    with pytest.raises(ConfigError, match="seeds"):
        G.generate_batch(params, CFG, [[11], [11]], 3, seeds=[1])


def test_attention_buckets():
    cfg = GPTConfig(vocab_size=5, n_embd=4, n_head=1, n_layer=1, block_size=300)
    assert G.attn_buckets(cfg) == [64, 128, 256, 300]
    assert [G.attn_bucket(cfg, n) for n in (1, 64, 65, 257, 1000)] == [64, 64, 128, 300, 300]
    assert G.attn_buckets(CFG) == [24]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_tiny_temperatures_sample_a_valid_distribution_under_jit(dtype):
    """Issue 21 item 3: at 1e-37 < t < 1e-9 softmax(l / t) under jit gave NaN and garbage tokens.
    Any t > 0 must give a valid distribution, and a vanishing t the greedy (argmax) token."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 3, (8, 30)), dtype).at[:, 3].add(40.0)  # some rows peak at 3
    logits = logits.at[0].set(jnp.linspace(-1e4, 1e4, 30, dtype=dtype))  # a wide row
    greedy = np.asarray(jnp.argmax(logits, -1))
    probs_fn = jax.jit(G.sampling_probs)
    sample = jax.jit(G.sample_tokens)
    temps = [1e-45, 1e-40, 1e-38, 1e-37, 1e-30, 1e-20, 1e-10, 1e-9, 1e-7, 1e-5, 1e-3, 0.1, 1.0, 10.0, 1e30]
    for t in temps:
        t_B = jnp.full(8, t, dtype)
        p = np.asarray(probs_fn(logits, t_B))
        assert np.isfinite(p).all() and (p >= 0).all(), t
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        for u in (0.0, 0.3, 0.999999):
            tok = np.asarray(sample(logits, t_B, jnp.full(8, u, dtype)))
            assert ((tok >= 0) & (tok < 30)).all(), (t, u)
            if t <= 1e-7:
                assert (tok == greedy).all(), (t, u, tok, greedy)
    # the numpy inference model follows the same rule
    from jaxsys.gpt.inference import sample_token

    for t in (1e-320, 1e-300, 1e-37, 1e-10):
        assert sample_token(np.asarray(logits[1], np.float64), t, 0.5) == greedy[1]
