"""The real jitted train step and the training loop (checkpoint, resume, bad data)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, DataError, ShapeError
from jaxsys.mlp import model
from jaxsys.mlp.adam import AdamConfig
from jaxsys.mlp.data import Dataset, load_digits
from jaxsys.mlp.train import StepConfig, TrainConfig, init_state, train, train_step, train_steps
from jaxsys.train import read_metrics

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

TINY = dict(hidden=(8,), batch=16, log_every=1, eval_every=2, checkpoint_every=2)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_train_step_smoke_no_recompile(digits):
    cfg = StepConfig(model.MLPConfig((64, 8, 10)), AdamConfig("hand"), "hand")
    state = init_state(jax.random.PRNGKey(0), cfg)
    x, y = jnp.asarray(digits.x_train[:16]), jnp.asarray(digits.y_train[:16])
    state, m1 = train_step(state, x, y, cfg=cfg)
    n_compiled = train_step._cache_size()
    state, m2 = train_step(state, jnp.asarray(digits.x_train[16:32]), jnp.asarray(digits.y_train[16:32]), cfg=cfg)
    assert train_step._cache_size() == n_compiled  # second call reuses the executable
    assert int(state.step) == 2 and int(state.opt_state.count) == 2
    assert np.isfinite(float(m1["loss"])) and np.isfinite(float(m2["loss"]))
    assert 0.0 <= float(m2["accuracy"]) <= 1.0
    assert state.params[0]["w"].dtype == jnp.float32


def test_autodiff_optax_step_equals_hand_step():
    rng = np.random.default_rng(0)
    mcfg = model.MLPConfig((5, 6, 4, 3), "classify")
    x, y = jnp.asarray(rng.normal(size=(7, 5))), jnp.asarray(rng.integers(0, 3, 7))
    out = {}
    for grad, opt in (("hand", "hand"), ("autodiff", "optax")):
        cfg = StepConfig(mcfg, AdamConfig(opt), grad)
        state = init_state(jax.random.PRNGKey(1), cfg, jnp.float64)
        for _ in range(3):
            state, m = train_step(state, x, y, cfg=cfg)
        out[grad] = (state.params, float(m["loss"]))
    np.testing.assert_allclose(out["hand"][1], out["autodiff"][1], rtol=1e-13)
    for a, b in zip(jax.tree_util.tree_leaves(out["hand"][0]), jax.tree_util.tree_leaves(out["autodiff"][0])):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_train_steps_scan_equals_repeated_train_step():
    rng = np.random.default_rng(2)
    cfg = StepConfig(model.MLPConfig((5, 6, 4, 3), "classify"), AdamConfig("hand"), "hand")
    xs, ys = jnp.asarray(rng.normal(size=(4, 7, 5))), jnp.asarray(rng.integers(0, 3, (4, 7)))
    one = init_state(jax.random.PRNGKey(3), cfg, jnp.float64)
    losses = []
    for k in range(4):
        one, m = train_step(one, xs[k], ys[k], cfg=cfg)
        losses.append(float(m["loss"]))
    many, ms = train_steps(init_state(jax.random.PRNGKey(3), cfg, jnp.float64), xs, ys, cfg=cfg)
    assert int(many.step) == 4 and ms["loss"].shape == (4,)
    np.testing.assert_allclose(np.asarray(ms["loss"]), losses, rtol=1e-13)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(many)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_train_checkpoint_and_resume_equals_uninterrupted(tmp_path, digits):
    full = train(TrainConfig(steps=6, **TINY), tmp_path / "full", data=digits, progress=False, log=lambda m: None)
    part = train(TrainConfig(steps=4, **TINY), tmp_path / "part", data=digits, progress=False, log=lambda m: None)
    assert part["steps"] == 4
    msgs = []
    res = train(TrainConfig(steps=6, **TINY), tmp_path / "part", data=digits, progress=False, log=msgs.append)
    assert res["resumed_from"] == 4 and res["steps"] == 6
    assert any("resumed from step 4" in m for m in msgs)
    assert res["test_loss"] == full["test_loss"] and res["train_loss"] == full["train_loss"]
    steps = [r["step"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "part" / "ckpt" / "6").is_dir()
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["steps"] == 6 and 0.0 <= summary["test_accuracy"] <= 1.0


def test_resume_with_other_shape_is_refused(tmp_path, digits):
    train(TrainConfig(steps=2, **TINY), tmp_path, data=digits, progress=False, log=lambda m: None)
    other = {**TINY, "hidden": (4,)}
    with pytest.raises(ConfigError, match="another configuration"):
        train(TrainConfig(steps=4, **other), tmp_path, data=digits, progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="another configuration"):  # other maths: another lr
        train(TrainConfig(steps=4, **TINY, learning_rate=0.5), tmp_path, data=digits, progress=False)


def _regress_data(n=40, d=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    return Dataset("toy", x[:30], y[:30], x[30:], y[30:], 1)


def test_train_rejects_bad_data_before_tracing(tmp_path):
    good = _regress_data()
    y_nan = good.y_train.copy()
    y_nan[5, 0] = np.nan
    with pytest.raises(DataError, match="toy train set: regression targets contain 1 NaN"):
        train(
            TrainConfig(task="regress", steps=2, **TINY),
            tmp_path / "a",
            data=good._replace(y_train=y_nan),
            progress=False,
        )
    with pytest.raises(ShapeError, match=r"toy test set: inputs must be \[B x 3\], got \[10, 4\]"):
        train(
            TrainConfig(task="regress", steps=2, **TINY),
            tmp_path / "b",
            data=good._replace(x_test=np.zeros((10, 4), np.float32)),
            progress=False,
        )
    with pytest.raises(ConfigError, match="unknown activation 'gelu'"):
        train(
            TrainConfig(task="regress", activation="gelu", steps=2, **TINY), tmp_path / "c", data=good, progress=False
        )
    with pytest.raises(ConfigError, match="batch 64 exceeds the 30 training examples"):
        train(TrainConfig(task="regress", steps=2, **{**TINY, "batch": 64}), tmp_path / "d", data=good, progress=False)
    with pytest.raises(ConfigError, match="steps must be > 0"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="grad must be one of"):
        StepConfig(grad="numeric")


def test_regression_training_reduces_loss(tmp_path):
    s = train(
        TrainConfig(
            task="regress",
            hidden=(8,),
            steps=60,
            batch=16,
            learning_rate=1e-2,
            log_every=20,
            eval_every=60,
            checkpoint_every=60,
        ),
        tmp_path,
        data=_regress_data(),
        progress=False,
        log=lambda m: None,
    )
    y = _regress_data().y_test
    baseline = 0.5 * float(np.mean((y - y.mean()) ** 2))  # predicting the mean
    assert s["test_loss"] < 0.5 * baseline and "test_rmse" in s


def test_ctrl_c_saves_a_checkpoint_and_resume_ends_where_the_uninterrupted_run_does(tmp_path, digits):
    """A KeyboardInterrupt that does not wait for the step (raised from the on_step hook after step 3,
    as a second Ctrl-C would be; periodic checkpoints every 4): a checkpoint at step 3, and the run
    resumed from it ends at the uninterrupted run's numbers."""
    cfg = TrainConfig(steps=6, **{**TINY, "checkpoint_every": 4})
    full = train(cfg, tmp_path / "full", data=digits, progress=False, log=lambda m: None)

    def ctrl_c(step, state):
        if step == 3:
            raise KeyboardInterrupt

    logs: list = []
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=digits, progress=False, log=logs.append, on_step=ctrl_c)
    assert "interrupted: checkpoint saved at step 3" in logs
    assert sorted(p.name for p in (tmp_path / "cut" / "ckpt").iterdir() if p.name.isdigit()) == ["3"]
    res = train(cfg, tmp_path / "cut", data=digits, progress=False, log=lambda m: None)
    assert res["resumed_from"] == 3 and res["steps"] == 6
    assert res["test_loss"] == full["test_loss"] and res["train_loss"] == full["train_loss"]


def _send_ctrl_c_in_step(monkeypatch, at: int, times: int = 1) -> None:
    """A real SIGINT (`times` of them) from inside the MLP loop's step call that takes state.step
    `at` -> at + 1, before the jitted step is dispatched."""
    import os
    import signal

    from jaxsys.mlp import train as mt

    real = mt.make_sharded_train_step

    def with_ctrl_c(*a, **kw):
        ms = real(*a, **kw)

        def step(state, *b):
            if int(state.step) == at:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
            return ms.step(state, *b)

        return ms._replace(step=step)

    monkeypatch.setattr(mt, "make_sharded_train_step", with_ctrl_c)


def test_real_ctrl_c_finishes_the_step_in_flight_saves_it_and_resume_matches(tmp_path, digits, monkeypatch):
    """A real SIGINT while step 3 is being dispatched (periodic checkpoints every 4): step 3 completes
    and is checkpointed before anything is said, Python's handler is back afterwards, and the run
    resumed from step 3 ends at the uninterrupted run's numbers."""
    import signal

    cfg = TrainConfig(steps=6, **{**TINY, "checkpoint_every": 4})
    full = train(cfg, tmp_path / "full", data=digits, progress=False, log=lambda m: None)
    ckpt_dir = tmp_path / "cut" / "ckpt"

    def on_disk():
        return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())

    _send_ctrl_c_in_step(monkeypatch, at=2)
    logs: list = []
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=digits, progress=False, log=lambda m: logs.append((m, on_disk())))
    assert logs == [("interrupted: checkpoint saved at step 3", [3])]  # said once, after the save
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    res = train(cfg, tmp_path / "cut", data=digits, progress=False, log=lambda m: None)
    assert res["resumed_from"] == 3 and res["steps"] == 6
    assert res["test_loss"] == full["test_loss"] and res["train_loss"] == full["train_loss"]


def test_second_ctrl_c_stops_at_once_and_saves_the_last_completed_step(tmp_path, digits, monkeypatch):
    cfg = TrainConfig(steps=6, **{**TINY, "checkpoint_every": 4})
    _send_ctrl_c_in_step(monkeypatch, at=1, times=2)  # the second raises before step 2 is dispatched
    logs: list = []
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, data=digits, progress=False, log=logs.append)
    assert logs == ["interrupted: checkpoint saved at step 1"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == ["1"]
