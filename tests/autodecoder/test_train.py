"""Training driver: resume reproduces an uninterrupted run, vmap over seeds, no recompiles."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxsys.autodecoder import train as T
from jaxsys.autodecoder.schedules import ScheduleConfig
from jaxsys.errors import ConfigError
from jaxsys.train.checkpoint import Checkpointer
from jaxsys.train.metrics import read_metrics


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_resume_matches_uninterrupted(tiny, tmp_path):
    full = T.train(tiny, tmp_path / "a", progress=False, render=False)
    assert full["steps"] == 8 and full["samples"] == 8 * 32
    half = dataclasses.replace(tiny, steps=4)
    T.train(half, tmp_path / "b", progress=False, render=False)
    resumed = T.train(tiny, tmp_path / "b", progress=False, render=False)
    assert resumed["steps"] == 8
    _, pa, Za = T.load_run(tmp_path / "a")
    _, pb, Zb = T.load_run(tmp_path / "b")
    for a, b in zip(_leaves((pa, Za)), _leaves((pb, Zb))):
        np.testing.assert_array_equal(a, b)
    recs = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in recs] == [4, 8]
    assert all(np.isfinite(r["loss"]) for r in recs)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(s["iou"]) == {"circle", "box", "triangle"}
    with Checkpointer(tmp_path / "a" / "ckpt") as ck:
        assert ck.all_steps() == [4, 8]  # checkpoint_every=4 micro-batches
    with pytest.raises(ConfigError, match=r"different configuration \(batch_size: 32 -> 16\)"):
        T.train(dataclasses.replace(tiny, batch_size=16), tmp_path / "a", progress=False, render=False)


def test_ctrl_c_checkpoints_and_resume_matches(tiny, tmp_path, monkeypatch):
    """A KeyboardInterrupt that does not wait (raised from the progress bar after the first call, as a
    second Ctrl-C would be) saves that call's step; the resumed run (another --checkpoint-every is
    allowed) ends where an uninterrupted run ends, bit for bit."""
    import jaxsys.train as jt

    cfg = dataclasses.replace(tiny, checkpoint_every=0)  # no periodic checkpoint before the end
    update = jt.Progress.update

    def interrupt(self, k=1):
        update(self, k)
        if self.n >= 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(jt.Progress, "update", interrupt)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "c", progress=False, render=False, log=logs.append)
    monkeypatch.undo()
    assert logs == ["interrupted: checkpoint saved at step 4"]
    with Checkpointer(tmp_path / "c" / "ckpt") as ck:
        assert ck.all_steps() == [4]
    resumed = T.train(dataclasses.replace(cfg, checkpoint_every=2), tmp_path / "c", progress=False, render=False)
    assert resumed["steps"] == 8
    T.train(cfg, tmp_path / "u", progress=False, render=False)
    for a, b in zip(_leaves(T.load_run(tmp_path / "c")[1:]), _leaves(T.load_run(tmp_path / "u")[1:])):
        np.testing.assert_array_equal(a, b)


def test_real_ctrl_c_finishes_the_call_in_flight_saves_it_and_resume_matches(tiny, tmp_path, monkeypatch):
    """A real SIGINT while the second jitted call (micro-batches 5..8) is being dispatched, no periodic
    checkpoints: that call completes and step 8 is checkpointed before anything is said, Python's
    handler is back afterwards, and the run resumed from step 8 ends where an uninterrupted run ends."""
    import os
    import signal

    cfg = dataclasses.replace(tiny, steps=12, checkpoint_every=0)
    real = T.train_step
    ckpt_dir = tmp_path / "c" / "ckpt"

    def on_disk():
        return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())

    def with_ctrl_c(state, *a, **kw):
        if int(np.max(np.asarray(state.step))) == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real(state, *a, **kw)

    monkeypatch.setattr(T, "train_step", with_ctrl_c)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "c", progress=False, render=False, log=lambda m: logs.append((m, on_disk())))
    assert logs == [("interrupted: checkpoint saved at step 8", [8])]  # said once, after the save
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    resumed = T.train(cfg, tmp_path / "c", progress=False, render=False)
    assert resumed["steps"] == 12
    T.train(cfg, tmp_path / "u", progress=False, render=False)
    for a, b in zip(_leaves(T.load_run(tmp_path / "c")[1:]), _leaves(T.load_run(tmp_path / "u")[1:])):
        np.testing.assert_array_equal(a, b)


def test_vmap_seeds_match_single_runs(tiny):
    """Seed 0 of a two-seed run is the one-seed run from the same key; seed 1 is another run."""
    key = jax.random.key(5)
    cfg2 = dataclasses.replace(tiny, num_seeds=2)
    st2, loss2, _ = T.train_step(T.init_state(key, cfg2), T.data_keys(key, cfg2), cfg=cfg2.step_config(), n_steps=4)
    assert loss2.shape == (2, 4)
    st1, loss1, _ = T.train_step(T.init_state(key, tiny), T.data_keys(key, tiny), cfg=tiny.step_config(), n_steps=4)
    for a, b in zip(_leaves(T.seed_slice(st2, 0, cfg2)), _leaves(st1)):
        np.testing.assert_allclose(a, b, atol=2e-6)
    np.testing.assert_allclose(np.asarray(loss2[0]), np.asarray(loss1), rtol=1e-5)
    assert not np.allclose(np.asarray(loss2[0]), np.asarray(loss2[1]))


@pytest.mark.parametrize("name", ["strict", "batched"])
def test_other_schedules_train(tiny, name):
    cfg = dataclasses.replace(tiny, sched=ScheduleConfig(name=name, batched_lr=3e-3))
    key = jax.random.key(0)
    st, keys = T.init_state(key, cfg), T.data_keys(key, cfg)
    st, loss, _ = T.train_step(st, keys, cfg=cfg.step_config(), n_steps=4)
    n = T.train_step._cache_size()
    st, loss, _ = T.train_step(st, keys, cfg=cfg.step_config(), n_steps=4)
    assert T.train_step._cache_size() == n  # no recompilation on the second call
    assert int(st.step) == 8 and np.all(np.isfinite(np.asarray(loss)))


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(steps=0), "steps"),
        (dict(num_seeds=0), "num_seeds"),
        (dict(checkpoint_every=-1), "checkpoint_every"),
    ],
)
def test_bad_config(tiny, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        dataclasses.replace(tiny, **kw)
