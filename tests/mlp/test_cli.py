"""`jaxsys mlp ...` through jaxsys.cli.main, and the tour stage in quick mode."""

import json

import pytest

from jaxsys.cli import main
from jaxsys.mlp import tour


def test_cli_train_and_resume(tmp_path, capsys):
    args = [
        "mlp",
        "train",
        "--steps",
        "4",
        "--batch",
        "16",
        "--hidden",
        "8",
        "--log-every",
        "1",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
        "--run-dir",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 4
    args[args.index("--steps") + 1] = "6"
    assert main(args) == 0  # the run dir holds a checkpoint: it resumes
    assert "resumed from step 4" in capsys.readouterr().out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["steps"] == 6 and s["resumed_from"] == 4


def test_cli_bad_input(tmp_path, capsys):
    base = ["mlp", "train", "--steps", "2", "--run-dir", str(tmp_path), "--no-progress"]
    assert main(base + ["--activation", "gelu"]) == 2
    assert "unknown activation 'gelu'" in capsys.readouterr().err
    assert main(base + ["--hidden", "64,x"]) == 2
    assert "--hidden must be comma-separated integers" in capsys.readouterr().err
    for bad in (["--steps", "0"], ["--resume"], ["--ckpt-every", "2"]):  # parse time; old spellings are gone
        with pytest.raises(SystemExit) as e:
            main(["mlp", "train", *bad])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--steps must be >= 1, got 0" in err and "unrecognized arguments: --resume" in err
    # settings are checked before a fresh run directory is made (none is left behind)
    out = tmp_path / "fresh"
    for bad, msg in (
        (["--lr", "nan"], "learning_rate must be > 0, got nan"),
        (["--activation", "gelu"], "unknown activation 'gelu'"),
        (["--lr", "-1"], "learning_rate must be > 0, got -1"),
    ):
        assert main(["mlp", "train", "--steps", "2", "--run-dir", str(out), "--no-progress"] + bad) == 2
        assert msg in capsys.readouterr().err
    assert not out.exists()


def test_cli_gradcheck(capsys):
    assert main(["mlp", "gradcheck", "--task", "regress", "--hidden", "4,4", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["task"] for r in recs] == ["regress"]
    assert all(r["rel_err_vs_jax_grad"] < 1e-12 and r["finite_differences"] == "ok" for r in recs)
    assert "gradients ok" in out


def test_tour_stage_quick(tmp_path):
    r = tour.run_stage(tmp_path, quick=True)
    assert r["steps"] == 150 and 0.5 < r["test_accuracy"] <= 1.0  # 150 steps already reach ~0.9
    assert r["grad_rel_err"] < 1e-12 and r["fd_check"] == "ok"
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "mlp.json").read_text())["train"]["steps"] == 150
