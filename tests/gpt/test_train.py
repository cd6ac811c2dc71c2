"""jaxsys.gpt.train: the jitted step (Adam + linear decay vs a numpy Adam), engines agree, resume
is bit-identical, export round-trips, bad configs are refused."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.gpt import model
from jaxsys.gpt import train as gt
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.data import from_text
from tests.gpt.names import NAMES

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # scoped to this module's tests: a global config update would leak into every later test module
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="module")
def data():
    return from_text(NAMES, "docs", block_size=16, seed=0)


def _cfg(data, **kw):
    kw = {"n_embd": 8, "n_head": 2, "n_layer": 1, **kw}
    return GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=data.train.seq_len, **kw)


def _np(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


def test_train_step_matches_a_numpy_adam_with_linear_decay(data):
    """Three real steps in float64 against Adam written out in numpy on the jax.grad gradients."""
    cfg = _cfg(data)
    tcfg = gt.TrainConfig(steps=4, batch_size=3, dtype="float64", engine="hand")
    state = gt.init_state(jax.random.key(0), tcfg.step_config(cfg))
    p = _np(state.params)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    grad_fn = jax.jit(jax.grad(model.loss_fn), static_argnames="cfg")
    for t in range(3):
        b = data.train.batch(t, 3, tcfg.seed)
        g = _np(grad_fn({k: x for k, x in p.items()}, b.tokens, b.targets, b.mask, cfg))
        lr_t = 0.01 * (1 - t / 4)
        for k in p:
            m[k] = 0.85 * m[k] + 0.15 * g[k]
            v[k] = 0.99 * v[k] + 0.01 * g[k] ** 2
            mh, vh = m[k] / (1 - 0.85 ** (t + 1)), v[k] / (1 - 0.99 ** (t + 1))
            p[k] = p[k] - lr_t * mh / (np.sqrt(vh) + 1e-8)
        state, loss = gt.train_step(state, b.tokens, b.targets, b.mask, cfg=tcfg.step_config(cfg))
        assert np.isfinite(float(loss))
    assert int(state.step) == 3
    for k in p:
        np.testing.assert_allclose(np.asarray(state.params[k]), p[k], rtol=1e-9, atol=1e-12)


def test_hand_and_autodiff_engines_take_the_same_steps(data):
    cfg = _cfg(data)
    out = {}
    for engine in ("hand", "autodiff"):  # same TrainConfig as above: the hand step is compiled
        tcfg = gt.TrainConfig(steps=4, batch_size=3, dtype="float64", engine=engine)
        state = gt.init_state(jax.random.key(0), tcfg.step_config(cfg))
        for t in range(2):
            b = data.train.batch(t, 3, 0)
            state, _ = gt.train_step(state, b.tokens, b.targets, b.mask, cfg=tcfg.step_config(cfg))
        out[engine] = _np(state.params)
    for k in out["hand"]:
        np.testing.assert_allclose(out["hand"][k], out["autodiff"][k], rtol=1e-9, atol=1e-12)


def test_train_step_smoke_no_recompilation(data):
    """The real float32 step: the step counter advances, the loss is finite, and a second call with
    a new batch reuses the compiled step."""
    cfg = _cfg(data)
    step_cfg = gt.TrainConfig(steps=6, batch_size=4).step_config(cfg)  # the step of the resume test below
    state = gt.init_state(jax.random.key(0), step_cfg)
    b = data.train.batch(0, 4, 0)
    state, loss0 = gt.train_step(state, b.tokens, b.targets, b.mask, cfg=step_cfg)
    n = gt.train_step._cache_size()
    b = data.train.batch(1, 4, 0)
    state, loss1 = gt.train_step(state, b.tokens, b.targets, b.mask, cfg=step_cfg)
    assert gt.train_step._cache_size() == n
    assert int(state.step) == 2 and np.isfinite(float(loss0)) and np.isfinite(float(loss1))
    assert state.params["wte"].dtype == np.float32


def test_resume_after_interruption_is_bit_identical(data, tmp_path):
    cfg = _cfg(data)
    tcfg = gt.TrainConfig(steps=6, batch_size=4, eval_every=3, eval_batches=2, checkpoint_every=2, log_every=1)
    full = gt.train(data, cfg, tcfg, tmp_path / "full", log=None, progress=False, export=False)

    class Killed(Exception):
        pass

    def kill_at_5(step, state):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        gt.train(data, cfg, tcfg, tmp_path / "cut", log=None, progress=False, export=False, on_step=kill_at_5)
    with pytest.raises(ConfigError, match="different configuration"):  # never silently mix two runs
        gt.train(data, cfg, dataclasses.replace(tcfg, lr=0.02), tmp_path / "cut", log=None, progress=False)
    logs: list = []
    res = gt.train(  # the run dir holds a checkpoint: the run resumes from it
        data,
        cfg,
        dataclasses.replace(tcfg, log_every=2),
        tmp_path / "cut",
        log=logs.append,
        progress=False,
        export=False,
    )
    assert any(m.startswith("resumed from step 4 of 6") for m in logs)
    assert res.summary["start_step"] == 4 and int(res.state.step) == 6
    a, b = _np(full.state.params), _np(res.state.params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert res.summary["val_loss"] == full.summary["val_loss"]


def test_real_ctrl_c_finishes_the_step_in_flight_saves_it_and_resume_matches(data, tmp_path, monkeypatch):
    """A real SIGINT while step 3 is being dispatched (periodic checkpoints every 2): step 3 completes
    and is checkpointed before anything is said, Python's handler is back afterwards, and the run
    resumed from step 3 ends with the uninterrupted run's parameters, bit for bit."""
    import os
    import signal

    cfg = _cfg(data)
    tcfg = gt.TrainConfig(steps=6, batch_size=4, eval_every=3, eval_batches=2, checkpoint_every=2, log_every=1)
    full = gt.train(data, cfg, tcfg, None, log=None, progress=False, export=False)
    real = gt.make_sharded_train_step
    ckpt_dir = tmp_path / "ckpt"

    def on_disk():
        return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())

    def with_ctrl_c(*a, **kw):
        ms = real(*a, **kw)

        def step(state, *b):
            if int(state.step) == 2:  # Ctrl-C while step 3 is being dispatched
                os.kill(os.getpid(), signal.SIGINT)
            return ms.step(state, *b)

        return ms._replace(step=step)

    monkeypatch.setattr(gt, "make_sharded_train_step", with_ctrl_c)
    logs: list = []
    with pytest.raises(KeyboardInterrupt):
        gt.train(data, cfg, tcfg, tmp_path, log=lambda m: logs.append((m, on_disk())), progress=False, export=False)
    assert logs == [("interrupted: checkpoint saved at step 3", [2, 3])]  # said once, after the save
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    res = gt.train(data, cfg, tcfg, tmp_path, log=None, progress=False, export=False)
    assert res.summary["start_step"] == 3 and int(res.state.step) == 6
    a, b = _np(full.state.params), _np(res.state.params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_export_round_trips_through_weights_io(data, tmp_path):
    from jaxsys.gpt.weights_io import load_model, load_safetensors

    cfg = _cfg(data)
    tcfg = gt.TrainConfig(steps=6, batch_size=4, eval_every=0, eval_batches=2)
    res = gt.train(data, cfg, tcfg, tmp_path, log=None, progress=False)
    params, cfg2, tok = load_model(tmp_path)
    assert cfg2 == cfg and tok == data.tokenizer
    st = load_safetensors(tmp_path / "model.safetensors")
    for k, x in _np(res.state.params).items():
        np.testing.assert_array_equal(params[k], x.astype(np.float64))
        np.testing.assert_array_equal(st[k], x)
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "train_summary.json").is_file()


def test_bad_configs_are_refused_before_tracing(data):
    cfg = _cfg(data)
    with pytest.raises(ConfigError, match="vocab_size"):
        gt.train(data, dataclasses.replace(cfg, vocab_size=5), gt.TrainConfig(), log=None)
    with pytest.raises(ConfigError, match="block_size"):
        gt.train(data, dataclasses.replace(cfg, block_size=4), gt.TrainConfig(), log=None)
    for bad in (
        dict(engine="numpy"),
        dict(lr=-1.0),
        dict(steps=0),
        dict(beta2=1.0),
        dict(schedule="step"),
        dict(dtype="float16"),
    ):
        with pytest.raises(ConfigError):
            gt.TrainConfig(**bad)


def test_schedules():
    lin = gt.learning_rate_schedule(gt.TrainConfig(steps=10, lr=0.5))
    assert [float(lin(t)) for t in (0, 5, 10)] == pytest.approx([0.5, 0.25, 0.0])
    cos = gt.learning_rate_schedule(gt.TrainConfig(steps=10, lr=1.0, schedule="cosine", warmup_steps=2, min_lr=0.1))
    assert float(cos(1)) == pytest.approx(0.5) and float(cos(2)) == pytest.approx(1.0)
    assert float(cos(10)) == pytest.approx(0.1)


def test_hand_adam_option_matches_optax_with_linear_decay():
    # the hand-written Adam (jaxsys.nn.optim) behind --optimizer hand gives optax's updates (float64)
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (4, 3), jax.numpy.float64)}
    outs = {}
    for opt_name in ("optax", "hand"):
        tcfg = gt.TrainConfig(steps=10, optimizer=opt_name, dtype="float64")
        opt = gt.make_optimizer(tcfg)
        p, state = params, opt.init(params)
        for i in range(10):
            g = jax.tree_util.tree_map(lambda x, i=i: jax.numpy.cos(x * (i + 1)), p)
            upd, state = opt.update(g, state, p)
            p = jax.tree_util.tree_map(lambda a, b: a + b, p, upd)
        outs[opt_name] = p
    np.testing.assert_allclose(outs["hand"]["w"], outs["optax"]["w"], rtol=1e-12, atol=1e-14)
    assert not np.allclose(outs["hand"]["w"], params["w"])


def test_unknown_optimizer_is_refused():
    with pytest.raises(ConfigError, match="unknown optimizer"):
        gt.TrainConfig(optimizer="sgd")
