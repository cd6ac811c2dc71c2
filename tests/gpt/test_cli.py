"""`jaxsys gpt train|sample` through jaxsys.cli.main on tiny configs, and the tour stage (quick)."""

import json

import numpy as np

from jaxsys.cli import main
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.weights_io import load_model
from tests.gpt.names import NAMES

# the names and tiny config of test_train.py, so that the compiled step is shared in one session
TINY = [
    "--n-embd",
    "8",
    "--n-head",
    "2",
    "--n-layer",
    "1",
    "--batch",
    "4",
    "--no-progress",
    "--eval-batches",
    "2",
    "--log-every",
    "1",
]


def test_train_sample_resume(tmp_path, capsys):
    data = tmp_path / "names.txt"
    data.write_text(NAMES + "\n", encoding="utf-8")
    out = tmp_path / "model"
    args = [
        "gpt",
        "train",
        "--data",
        str(data),
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
        "--eval-every",
        "3",
        "--run-dir",
        str(out),
        *TINY,
    ]
    assert main(args) == 0
    params, cfg, tok = load_model(out)
    assert cfg.n_embd == 8 and cfg.n_layer == 1 and cfg.block_size == len("charlotte") + 1
    assert tok.chars == sorted(set(NAMES.replace("\n", "")))
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert sum("val_loss" in r for r in recs) == 2
    capsys.readouterr()

    # the same run again continues from the run dir's last checkpoint: a finished run trains nothing more
    assert main(args) == 0
    assert "resumed from step 6 of 6" in capsys.readouterr().err
    params2, _, _ = load_model(out)
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])
    assert main([*args, "--lr", "0.02"]) == 2  # another configuration in that run dir is refused
    assert "holds a run with a different configuration (train.lr: 0.01 -> 0.02)" in capsys.readouterr().err

    capsys.readouterr()
    assert main(["gpt", "sample", "--model", str(out), "--num", "3", "--seed", "5", "--temperature", "0.8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    # sample i is the float64 inference model's generation with seed 5 + i
    m = InferenceModel(params, cfg, tok)
    for i, line in enumerate(lines):
        ids = m.generate_from_prompt([tok.bos], cfg.block_size - 1, temperature=0.8, seed=5 + i)
        assert line == tok.decode(ids)
        assert set(line) <= set(tok.chars)


def test_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"emma\n\xc3\x28x\n")
    assert main(["gpt", "train", "--data", str(bad), "--steps", "1", "--run-dir", str(tmp_path / "o"), *TINY]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert (
        main(
            [
                "gpt",
                "train",
                "--mode",
                "docs",
                "--chat-categories",
                "greetings",
                "--steps",
                "1",
                "--run-dir",
                str(tmp_path / "o"),
                *TINY,
            ]
        )
        == 2
    )
    assert "--chat-categories" in capsys.readouterr().err
    assert main(["gpt", "sample", "--model", str(tmp_path / "nowhere")]) == 2
    assert "jaxsys: error" in capsys.readouterr().err


def test_tour_stage_quick(tmp_path):
    from jaxsys.gpt.tour import run_stage

    r = run_stage(tmp_path, quick=True)
    assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"])
    assert r["val_loss"] < np.log(27)  # better than uniform over the 27 tokens
    assert len(r["names"].split()) == 10
    assert (tmp_path / "loss.png").stat().st_size > 1000
    j = json.loads((tmp_path / "gpt.json").read_text())
    assert len(j["samples"]) == 10 and j["train_curve"] and j["val_curve"]
    assert (tmp_path / "model" / "weights.json").is_file()
