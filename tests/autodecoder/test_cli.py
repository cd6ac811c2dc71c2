"""CLI smoke tests through jaxsys.cli.main, and the tour stage (quick)."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")

from jaxsys.cli import main  # noqa: E402

# the same model / batch / burst length as conftest.TINY, so the jitted burst is shared
TINY_ARGS = [
    "--latent-dim",
    "4",
    "--freqs",
    "2",
    "--hidden",
    "16,16",
    "--batch",
    "32",
    "--steps-per-call",
    "4",
    "--eval-res",
    "24",
]


def test_train_view_infer(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "autodecoder",
            "train",
            *TINY_ARGS,
            "--steps",
            "4",
            "--run-dir",
            str(out),
            "--no-progress",
            "--infer-shape",
            "",
        ]
    )
    assert rc == 0
    for f in ("summary.json", "metrics.jsonl", "config.json", "reconstructions.png", "interpolation.png", "curves.png"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 4 and s["schedule"] == "microbatch"
    capsys.readouterr()
    # that run dir resumes only the same run: another learning rate is refused before any training
    resume = ["autodecoder", "train", *TINY_ARGS, "--steps", "8", "--run-dir", str(out), "--no-progress"]
    assert main([*resume, "--lr-w", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with a different configuration (sched.lr_w: 0.0003 -> 0.001)" in err
    assert "only --steps and --checkpoint-every may change on resume" in err
    assert json.loads((out / "config.json").read_text())["sched"]["lr_w"] == 0.0003  # left as it was
    png = tmp_path / "view.png"
    assert (
        main(
            [
                "autodecoder",
                "view",
                "--run-dir",
                str(out),
                "--burst",
                "4",
                "--res",
                "16",
                "--keys",
                "TMS]",
                "--save",
                str(png),
            ]
        )
        == 0
    )
    assert png.exists()
    assert main(["autodecoder", "infer", "--run-dir", str(out), "--shape", "circle", "--steps", "5"]) == 0
    assert '"iou"' in capsys.readouterr().out


def test_bad_input(tmp_path, capsys):
    assert main(["autodecoder", "train", *TINY_ARGS, "--shapes", "circle,blob", "--run-dir", str(tmp_path / "x")]) == 2
    assert "unknown shape 'blob'" in capsys.readouterr().err
    for argv, msg in [
        (["--batch", "0"], "--batch must be >= 1, got 0"),
        (["--num-seeds", "0"], "--num-seeds must be >= 1, got 0"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
        (["--out", str(tmp_path / "y")], "unrecognized arguments: --out"),  # old spellings are gone
        (["--quiet"], "unrecognized arguments: --quiet"),
        (["--no-resume"], "unrecognized arguments: --no-resume"),
    ]:
        with pytest.raises(SystemExit) as e:  # argparse: one 'jaxsys: error:' line, exit 2
            main(["autodecoder", "train", *argv, "--run-dir", str(tmp_path / "y")])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert main(["autodecoder", "train", *TINY_ARGS, "--fsdp", "--run-dir", str(tmp_path / "z")]) == 2
    assert "--fsdp does not apply" in capsys.readouterr().err
    assert main(["autodecoder", "view", "--tau", "0", "--save", str(tmp_path / "v.png")]) == 2
    assert "tau must be > 0" in capsys.readouterr().err
    assert main(["autodecoder", "infer", "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "not an autodecoder run directory" in capsys.readouterr().err


def test_tour_stage_quick(tmp_path):
    from jaxsys.autodecoder.tour import run_stage

    r = run_stage(tmp_path / "ad", quick=True)
    assert r["samples"] == 200 * 256 and 0 <= r["min_iou"] <= 1 and 0 <= r["inferred_iou"] <= 1
    assert (tmp_path / "ad" / "reconstructions.png").exists()
    assert (tmp_path / "ad" / "inferred.png").exists()
