"""The GINR training loop on a mesh of 4 simulated CPU devices (a child process: this one has 1
device). (Basename unique across tests/.)"""

from pathlib import Path

import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.ginr import data as gdata
from jaxsys.ginr import train as gt
from jaxsys.ginr.model import GinrConfig
from tests.sharding_util import run_worker

# float64 on, as in test_train.py: the one-device run below then shares that module's compiled step
# (the x64 flag is part of jit's cache key; test_train.py checks that one step serves all its runs)
pytestmark = pytest.mark.x64

TOL = 1e-5


def test_batch_must_divide_data_axis(tmp_path):
    class FakeMesh:
        shape = {"data": 4, "model": 1}

    x, _ = gdata.load_png20()
    with pytest.raises(ConfigError, match="batch_size 6 is not divisible by the mesh data axis"):
        gt.train(GinrConfig(), gt.TrainConfig(batch_size=6), x, x, tmp_path, mesh=FakeMesh(), progress=False)


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--mesh", "data=64"], "data\\*model = 64\\*1 = 64 but"),
        (["--mesh", "pipe=1"], "unknown axis 'pipe'"),
        (["--num-processes", "2"], "missing: coordinator, process_id"),
    ],
)
def test_cli_rejects_bad_mesh_and_distributed_flags(argv, msg, capsys):
    from jaxsys.cli import main

    assert main(["ginr", "train", "--data", "png20", *argv]) == 2
    import re

    assert re.search(msg, capsys.readouterr().err)


def test_data_parallel_step_on_4_devices_equals_single_device(tmp_path):
    r = run_worker(Path(__file__).with_name("_sharded_worker.py"), tmp_path)
    assert r["device_count"] == 4
    (case,) = r["cases"]
    assert case["mesh"] == "data=4"
    np.testing.assert_allclose(case["losses"], r["ref_losses"], rtol=TOL, atol=TOL)
    assert case["param_max_diff"] < TOL
    assert case["batch_specs"] == {"1/coords": "P('data',)", "1/images": "P('data',)", "1/targets": "P('data',)"}
    assert case["n_sharded_state_leaves"] == 0  # data parallel: parameters replicated
    np.testing.assert_allclose(r["loop_losses"], r["ref_losses"], rtol=TOL, atol=TOL)
    s = r["loop_summary"]
    assert s["steps"] == 2 and s["mesh"] == "data=4,model=1" and np.isfinite(s["final_test_psnr"])
    assert (tmp_path / "mesh" / "ckpt" / "2").is_dir() and (tmp_path / "mesh" / "summary.json").is_file()
    for png in ("reconstructions.png", "psnr_curve.png"):  # the same plots as on one device
        assert (tmp_path / "mesh" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_cli_two_processes_on_loopback(tmp_path):
    """`jaxsys ginr train --coordinator ... --num-processes 2 --process-id i` on two CPU processes of
    one device each (mesh data=2 across both): the same loop, the same losses as one device (the
    tour's quick configuration, so this process reuses the tests' compiled step)."""
    import json
    import sys

    from jaxsys.ginr.tour import QUICK_MODEL, QUICK_TRAIN
    from jaxsys.train import read_metrics
    from tests.sharding_util import free_port, run_processes

    port = free_port()
    argv = [sys.executable, "-m", "jaxsys.cli", "ginr", "train", "--data", "png20", "--no-progress"]
    argv += "--dim 16 --num-lp 4 --depth 1 --hidden 8 --num-freqs 3 --batch 10 --coords 256".split()
    argv += "--steps 30 --lr 3e-3 --warmup 5 --eval-every 0 --checkpoint-every 15".split()
    argv += ["--mesh", "data=2", "--run-dir", tmp_path / "mp", "--coordinator", f"127.0.0.1:{port}"]
    outs = run_processes([[*argv, "--num-processes", "2", "--process-id", i] for i in (0, 1)], n_devices=1)
    for rc, out, err in outs:
        assert rc == 0, err[-3000:]
    s = json.loads((tmp_path / "mp" / "summary.json").read_text())
    assert s["processes"] == 2 and s["mesh"] == "data=2,model=1" and s["steps"] == 30
    assert sorted(p.name for p in (tmp_path / "mp" / "ckpt").iterdir() if p.name.isdigit()) == ["15", "30"]
    assert (tmp_path / "mp" / "reconstructions.png").is_file()
    x, _ = gdata.load_png20()
    one = gt.train(QUICK_MODEL, QUICK_TRAIN, x, x, tmp_path / "one", progress=False, log=lambda m: None)
    losses = [[r["loss"] for r in read_metrics(tmp_path / d / "metrics.jsonl") if "loss" in r] for d in ("mp", "one")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=TOL, atol=TOL)
    assert abs(s["final_test_psnr_exact"] - one["final_test_psnr_exact"]) < 1e-3
