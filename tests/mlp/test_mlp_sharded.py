"""The MLP train step and loop of jaxsys/mlp/train.py on device meshes (basename unique across tests/: no __init__.py here) on 4 simulated CPU devices (a child process: this one has 1 device)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.mlp.train import tensor_parallel_rules
from jaxsys.train import sharding as sh
from tests.sharding_util import free_port, run_processes, run_worker

TOL = 1e-5


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_worker(
        Path(__file__).with_name("_sharded_worker.py"), tmp_path_factory.mktemp("mlp_sharded"), timeout=240
    )


def test_tensor_parallel_rules_pair_layers():
    mesh = {"data": 1, "model": 2}
    rules = tensor_parallel_rules(3)
    assert sh.leaf_spec("params/0/w", (16, 12), mesh, rules=rules) == sh.P("model")
    assert sh.leaf_spec("opt_state/mu/0/b", (16,), mesh, rules=rules) == sh.P("model")
    assert sh.leaf_spec("opt_state/nu/1/w", (8, 16), mesh, rules=rules) == sh.P(None, "model")
    assert sh.leaf_spec("params/2/w", (5, 8), mesh, rules=rules) == sh.P()  # unpaired last layer
    assert sh.leaf_spec("params/10/w", (5, 8), mesh, rules=rules) == sh.P()  # not layer 0
    with pytest.raises(ConfigError, match="params/0/w.*dim 0 of size 15"):
        sh.leaf_spec("params/0/w", (15, 12), mesh, rules=rules)


# hand-written intended layouts of the compiled step's inputs (state leaves, then x and y)
EXPECTED = {
    (2, 2, False): {
        "params/0/w": "P('model',)",
        "params/0/b": "P('model',)",
        "params/1/w": "P(None, 'model')",
        "params/1/b": "P()",
        "params/2/w": "P()",
        "params/2/b": "P()",
    },
    (2, 2, True): {
        "params/0/w": "P('model', 'data')",
        "params/0/b": "P('model',)",
        "params/1/w": "P('data', 'model')",
        "params/1/b": "P()",
        "params/2/w": "P()",
    },
    (4, 1, False): {"params/0/w": "P()", "params/1/w": "P()", "params/2/w": "P()"},
    (1, 1, False): {"params/0/w": "P()", "params/1/w": "P()", "params/2/w": "P()"},
}


def test_one_step_on_meshes_equals_single_device(result):
    r = result["parity"]
    assert r["device_count"] == 4
    assert {(c["mesh"][0], c["mesh"][1], c["fsdp"]) for c in r["cases"]} == set(EXPECTED)
    for c in r["cases"]:
        key = (c["mesh"][0], c["mesh"][1], c["fsdp"])
        np.testing.assert_allclose(c["losses"], r["ref_losses"], rtol=TOL, atol=TOL, err_msg=str(key))
        assert c["param_max_diff"] < TOL, key
        assert c["n_devices"] == key[0] * key[1]
        for leaf, spec in EXPECTED[key].items():
            assert c["specs"]["0/" + leaf] == spec, (key, leaf)
            moment = leaf.replace("params/", "opt_state/mu/")
            assert c["specs"]["0/" + moment] == spec, (key, moment)
        batch = "P('data',)" if key[0] > 1 else "P()"
        assert c["specs"]["1"] == batch and c["specs"]["2"] == batch, key
        assert c["specs"]["0/step"] == "P()" and c["specs"]["0/opt_state/count"] == "P()"


def test_train_loop_on_mesh_matches_single_device_and_resumes_on_2(result):
    """`jaxsys mlp train --mesh data=2,model=2` == single-device `train()`; its step-3 checkpoint
    resumed on a 2-device mesh ends at the same numbers."""
    r = result["train"]
    single, mesh, resumed = r["single"], r["mesh"], r["resumed"]
    assert mesh["mesh"] == "data=2,model=2" and resumed["mesh"] == "data=2,model=1"
    assert resumed["resumed_from"] == 3 and mesh["steps"] == single["steps"] == resumed["steps"] == 6
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert abs(mesh[k] - single[k]) < TOL, k
        assert abs(resumed[k] - single[k]) < TOL, k


def test_cli_two_processes_on_loopback(result, tmp_path):
    """`jaxsys mlp train --coordinator ... --num-processes 2 --process-id i` on two CPU processes of 2
    devices each (mesh data=2,model=2 across both) ends where the 4-device single-process run does."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _sharded_worker import CLI_ARGS

    port = free_port()
    outs = run_processes(
        [
            [
                sys.executable,
                "-m",
                "jaxsys.cli",
                "mlp",
                "train",
                *CLI_ARGS,
                "--mesh",
                "data=2,model=2",
                "--run-dir",
                tmp_path / "mp",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                i,
            ]
            for i in (0, 1)
        ],
        n_devices=2,
        timeout=240,
    )
    for rc, out, err in outs:
        assert rc == 0, err[-3000:]
        assert "mesh data=2,model=2 on 2 process(es)" in out
    s = json.loads((tmp_path / "mp" / "summary.json").read_text())
    assert s["processes"] == 2 and s["steps"] == 6
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert abs(s[k] - result["train"]["mesh"][k]) < TOL, k
    assert sorted(p.name for p in (tmp_path / "mp" / "ckpt").iterdir() if p.name.isdigit()) == ["3", "6"]
