"""Every `jaxsys` subcommand on bad input: exit status 2, exactly one `jaxsys: error:` line on stderr,
no traceback, and no work started (each case returns within seconds)."""

import subprocess
import sys

import numpy as np
import pytest

from jaxsys.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    np.save(d / "empty.npy", np.zeros((0,), np.float32))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "garbage.jxc").write_bytes(b"JXC\x00" + bytes(range(256)) * 4)
    (d / "tokenizer.json").write_text('{"model": {"vocab": {"a": 1}}}')
    (d / "model").mkdir()
    meta = '{"vocab_size": 3, "n_embd": 4, "n_head": 1, "n_layer": 1000000000, "block_size": 8, "chars": ["a", "b"]}'
    (d / "model" / "meta.json").write_text(meta)
    (d / "model" / "weights.json").write_text("{}")
    (d / "deep").mkdir()
    (d / "deep" / "meta.json").write_text("[" * 200_000)
    (d / "deep" / "weights.json").write_text("{}")
    (d / "empty_dir").mkdir()
    return d


# (argv with {bad} for the fixture folder, a fragment the message must contain)
CASES = [
    ("tour --only bogus", "unknown tour stage"),
    ("mlp train --steps 0", "--steps"),
    ("mlp train --hidden x", "--hidden"),
    ("mlp train --mesh data=0", "mesh"),
    ("mlp gradcheck --hidden 0", "--hidden"),
    ("autodecoder train --shapes bogus --steps 10", "unknown shape"),
    ("autodecoder train --checkpoint-every -5", "--checkpoint-every"),
    ("autodecoder view --run-dir {bad}/empty_dir", "run directory"),
    ("autodecoder infer --run-dir {bad}/empty_dir", "run directory"),
    ("gpt train --data {bad}/missing.txt", "missing.txt"),
    ("gpt train --steps -1", "--steps"),
    ("gpt sample --model {bad}/empty_dir", "meta.json"),
    ("gpt sample --model {bad}/model", "n_layer"),
    ("gpt sample --model {bad}/deep", "nested"),
    ("gpt sample --model {bad}/model --temperature -1", "--temperature"),
    ("gpt chat --model {bad}/model --max-tokens 0", "--max-tokens"),
    ("gpt serve --model {bad}/model --port 99999", "--port"),
    ("gpt serve --model {bad}/model --max-batch 0", "--max-batch"),
    ("gpt run-compressed --model {bad}/empty_dir", "meta.json"),
    ("codec compress {bad}/empty.npy {bad}/o.jxc", "empty"),
    ("codec compress {bad}/objects.npy {bad}/o.jxc", "pickled"),
    ("codec compress {bad}/tokenizer.json {bad}/o.jxc", "not a weights file"),
    ("codec compress {bad}/missing.npy {bad}/o.jxc", "missing.npy"),
    ("codec info {bad}/garbage.jxc", "magic"),
    ("codec decompress {bad}/garbage.jxc {bad}/o.npz", "magic"),
    ("ginr train --data {bad}/empty_dir --steps 1", "empty_dir"),
    ("ginr train --config bogus --data png20", "bogus"),
    ("ginr train --data png20 --coord-jitter 0.7 --steps 1", "coord_jitter"),
    ("ginr render --run-dir {bad}/empty_dir", "empty_dir"),
    ("ginr eval --run-dir {bad}/empty_dir --data png20", "empty_dir"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[c[0].split(" {")[0] for c in CASES])
def test_bad_input_is_one_error_line(argv, fragment, bad, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run directory made by mistake would land here, not in the repo
    try:
        rc = main(argv.format(bad=bad).split())
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, f"exit {rc}, stderr: {err}"
    assert len(err) == 1 and err[0].startswith("jaxsys: error: "), err
    assert fragment in err[0], err[0]
    assert not list(tmp_path.rglob("*")), f"bad input left files behind: {list(tmp_path.rglob('*'))}"


def test_real_process_exit_status(bad):
    """The installed entry point: exit status 2 and one stderr line, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "jaxsys.cli", "codec", "info", str(bad / "garbage.jxc")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("jaxsys: error:")
