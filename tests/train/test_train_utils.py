import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.errors import ConfigError, DataError
from jaxsys.train import Checkpointer, MetricsWriter, Progress, atomic_write_bytes, atomic_write_json, read_metrics
from jaxsys.train.checkpoint import _MISSING, check_resume_config, config_changes


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]  # no temp files left


def test_atomic_write_failure_keeps_old(tmp_path):
    p = tmp_path / "x.bin"
    atomic_write_bytes(p, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert len(os.listdir(tmp_path)) == 1


def test_metrics_roundtrip_and_torn_line(tmp_path):
    p = tmp_path / "m.jsonl"
    with MetricsWriter(p) as w:
        w.write(step=1, loss=jnp.float32(0.5))
        w.write(step=2, loss=float("nan"))
    with open(p, "a") as f:
        f.write('{"step": 3, "lo')  # killed mid-write
    recs = read_metrics(p)
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == 0.5 and recs[1]["loss"] == "nan"


def test_progress_non_tty():
    buf = io.StringIO()
    bar = Progress(range(3), desc="t", file=buf, interval_non_tty=0.0)
    for _ in bar:
        bar.set(loss=1.25)
    out = buf.getvalue()
    assert "t [" in out and "3/3" in out and "loss=1.25" in out


def test_checkpoint_roundtrip(tmp_path):
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(7)}
    ck = Checkpointer(tmp_path / "ck", max_to_keep=2)
    for s in (1, 2, 3):
        ck.save(s, jax.tree_util.tree_map(lambda x: x + s, state), meta={"s": s})
    assert ck.latest_step() == 3 and ck.all_steps() == [2, 3]
    got, meta = ck.restore(like=state)
    np.testing.assert_array_equal(got["w"], state["w"] + 3)
    assert meta == {"s": 3}
    got2, _ = ck.restore(like=state, step=2)
    assert int(got2["step"]) == 9
    assert ck.read_meta() == {"s": 3} and ck.read_meta(step=2) == {"s": 2}
    ck.close()


def test_checkpoint_missing(tmp_path):
    with pytest.raises(DataError, match="no checkpoint"):
        Checkpointer(tmp_path / "none").restore(like={"a": jnp.zeros(2)})
    with pytest.raises(DataError, match="no checkpoint"):
        Checkpointer(tmp_path / "none2").read_meta()


def test_load_json_bounds(tmp_path):
    from jaxsys.errors import DataError
    from jaxsys.train.io import load_json

    p = tmp_path / "m.json"
    p.write_text('{"a": [1, 2.5, "x"]}')
    assert load_json(p, "m.json") == {"a": [1, 2.5, "x"]}
    for bad, msg in [
        ("[" * 200_000, "nested"),
        ('{"n": ' + "9" * 5000 + "}", "number literal"),
        ('{"a": NaN}', "NaN"),
        (b"\xff\xfe", "UTF-8"),
        ("{", "invalid JSON"),
    ]:
        with pytest.raises(DataError, match=msg):
            load_json(bad, "m.json")
    with pytest.raises(DataError, match="cannot read"):
        load_json(tmp_path / "missing.json", "m.json")


def test_atomic_write_follows_umask(tmp_path):
    import os
    import stat

    from jaxsys.train.io import atomic_write_text

    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


class _ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self):
        return True


def test_progress_broken_output_never_raises():
    """A bar on a closed pipe (Ctrl-C of `... | tee log`) turns itself off instead of raising, so the
    checkpoint after the loop still happens."""
    for f in (_ClosedPipe(), io.StringIO()):
        bar = Progress(total=5, desc="t", file=f, interval=0.0, interval_non_tty=0.0)
        if not isinstance(f, _ClosedPipe):
            f.close()  # a closed non-tty stream: ValueError on write
        for _ in range(5):
            bar.set(loss=1.0)
            bar.update()
        bar.close()
        assert bar.disable


def test_progress_tty_uses_tqdm():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    bar = Progress(total=4, desc="t", file=buf, interval=0.0)
    for _ in range(4):
        bar.set(loss=0.5)
        bar.update()
    bar.close()
    assert "4/4" in buf.getvalue() and "loss=0.5" in buf.getvalue()


def test_resume_config_check_names_the_changed_fields(tmp_path):
    saved = {"model": {"hidden": [8, 8], "n": 2}, "train": {"lr": 0.01, "steps": 10, "old": 1}}
    now = {"model": {"hidden": [8, 16], "n": 2}, "train": {"lr": 0.01, "steps": 20, "new": 2}}
    assert config_changes(saved, saved) == {}
    assert config_changes(saved, now, ignore=("train.steps",)) == {
        "model.hidden": ([8, 8], [8, 16]),
        "train.old": (1, _MISSING),
        "train.new": (_MISSING, 2),
    }
    assert config_changes(None, now) == {"config": (None, now)}  # no saved config at all
    check_resume_config(
        tmp_path, saved, dict(saved, train={**saved["train"], "steps": 30}), may_change=("train.steps",), advice="x"
    )
    with pytest.raises(ConfigError) as e:
        check_resume_config(tmp_path, saved, now, may_change=("train.steps",), advice="use another run dir")
    assert str(e.value) == (
        f"{tmp_path} holds a run with a different configuration (model.hidden: [8, 8] -> [8, 16], "
        "train.old: 1 -> <missing>, train.new: <missing> -> 2); use another run dir"
    )


def test_progress_second_close_draws_nothing():
    buf = io.StringIO()
    bar = Progress(total=4, desc="t", file=buf)
    bar.update(4)
    bar.close()
    drawn = buf.getvalue()
    assert "4/4" in drawn.splitlines()[-1]
    bar.close()  # a loop that stops on Ctrl-C closes its bar before the message, and again on the way out
    assert buf.getvalue() == drawn
