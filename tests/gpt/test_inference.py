import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import model
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.gpt.weights_io import save_model

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

TOK = Tokenizer.from_corpus("hello world", chat=True)
CFG = GPTConfig(vocab_size=TOK.vocab_size, n_embd=8, n_head=4, n_layer=2, block_size=10)


@pytest.fixture(scope="module")
def params():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # a module fixture runs before the per-test x64 switch
    try:
        return {k: np.asarray(v) for k, v in model.init_params(jax.random.PRNGKey(5), CFG, jnp.float64).items()}
    finally:
        jax.config.update("jax_enable_x64", before)


def test_kv_cache_logits_match_tensor_forward(params):
    ids = TOK.encode_conversation([("user", "hello"), ("assistant", "wo")])[:10]
    ref, _ = model.forward(params, jnp.asarray([ids]), CFG)
    inf = InferenceModel(params, CFG, TOK)
    np.testing.assert_allclose(inf.sequence_logits(ids), ref[0], atol=1e-10, rtol=0)
    np.testing.assert_allclose(inf.logits_for_next(ids[:4]), ref[0, 3], atol=1e-10, rtol=0)


def _reference_sample(inf, prompt, uniforms, temperature, stop):
    """Independent loop: recompute from scratch each step, inverse-CDF sampling by hand."""
    seq, out = list(prompt), []
    for u in uniforms:
        z = inf.logits_for_next(seq) / temperature
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        c, tok = 0.0, len(probs) - 1
        for i, p in enumerate(probs):
            c += p
            if c > u:
                tok = i
                break
        if tok in stop:
            break
        out.append(tok)
        seq.append(tok)
        if len(seq) > inf.cfg.block_size:  # the token after a full context is still sampled
            break
    return out


def test_sampling_convention_and_seed(params):
    inf = InferenceModel(params, CFG, TOK)
    prompt = [TOK.bos, TOK.user] + TOK.encode("he")
    us = np.random.default_rng(7).random(6)
    got = inf.generate_from_prompt(prompt, 6, temperature=0.8, seed=123, uniforms=us, stop_ids=[])
    assert got == _reference_sample(inf, prompt, us, 0.8, stop=set())
    assert len(got) == 6
    # the seed path draws default_rng(seed).random() once per step
    assert inf.generate_from_prompt(prompt, 6, temperature=0.8, seed=7, stop_ids=[]) == got
    # greedy = argmax chain
    g = inf.generate_from_prompt(prompt, 3, greedy=True, stop_ids=[])
    assert g[0] == int(np.argmax(inf.logits_for_next(prompt)))
    assert g[1] == int(np.argmax(inf.logits_for_next(prompt + g[:1])))


def test_stops_at_special_tokens_and_block_size(params):
    p = dict(params)
    p["lm_head"] = np.zeros_like(p["lm_head"])  # uniform next-token distribution
    v = CFG.vocab_size
    inf = InferenceModel(p, CFG, TOK)
    # chat: end_turn = n + 2 occupies [(n+2)/V, (n+3)/V) of the CDF
    u_end = (TOK.end_turn + 0.5) / v
    assert inf.generate_from_prompt([TOK.bos], 5, uniforms=[0.0, 0.01, u_end, 0.0, 0.0]) == [0, 0]
    # plain: BOS = n is the last id
    ptok = Tokenizer(TOK.chars)
    pcfg = GPTConfig(vocab_size=ptok.vocab_size, n_embd=8, n_head=4, n_layer=1, block_size=4)
    pp = {k: np.zeros(s) for k, s in model.param_shapes(pcfg).items()}
    pp["wte"] = np.ones_like(pp["wte"])
    pinf = InferenceModel(pp, pcfg, ptok)
    assert pinf.generate_from_prompt([ptok.bos], 5, uniforms=[0.0, 0.999999]) == [0]
    # context fills up: prompt 2 + 2 fed tokens = block_size 4, plus the token sampled after them
    assert pinf.generate_from_prompt([ptok.bos, 1], 10, uniforms=[0.0] * 10) == [0, 0, 0]
    assert _reference_sample(pinf, [ptok.bos, 1], [0.0] * 10, 1.0, set()) == [0, 0, 0]


def test_errors(params):
    inf = InferenceModel(params, CFG, TOK)
    with pytest.raises(ConfigError, match="longer than block_size=10"):
        inf.generate_from_prompt([TOK.bos] * 11, 3)
    with pytest.raises(ConfigError, match="temperature"):
        inf.generate_from_prompt([TOK.bos], 3, temperature=0.0)
    with pytest.raises(DataError, match="non-empty prompt"):
        inf.generate_from_prompt([], 3)
    with pytest.raises(DataError, match="outside"):
        inf.logits_for_next([CFG.vocab_size])
    with pytest.raises(ConfigError, match="vocab_size"):
        InferenceModel(params, CFG, Tokenizer(TOK.chars))


def test_from_dir(tmp_path, params):
    save_model(tmp_path, params, CFG, TOK)
    inf = InferenceModel.from_dir(tmp_path)
    assert inf.tok == TOK and inf.default_stop_ids() == [TOK.end_turn]
    ref = InferenceModel(params, CFG, TOK)
    prompt = [TOK.bos, TOK.user] + TOK.encode("hello") + [TOK.end_turn, TOK.assistant]
    assert inf.generate_from_prompt(prompt, 3, seed=1) == ref.generate_from_prompt(prompt, 3, seed=1)
    np.testing.assert_array_equal(inf.logits_for_next(prompt), ref.logits_for_next(prompt))
