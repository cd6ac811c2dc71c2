"""jaxsys/train/sharding.py: mesh parsing and placement rules in-process; the multi-device behaviour
in child processes on simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N),
because this pytest process has already initialised JAX with one device."""

import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxsys.errors import ConfigError, DataError
from jaxsys.train import distributed as dist
from jaxsys.train import sharding as sh
from tests import sharding_util

WORKER = Path(__file__).with_name("_sharding_worker.py")
TOL = 1e-5


def run_worker(n_devices: int, *args: str, timeout: float = 120) -> dict:
    return sharding_util.run_worker(WORKER, *args, n_devices=n_devices, timeout=timeout)


# ------------------------------------------------------------------------------- in-process
@pytest.mark.parametrize(
    "spec,n,expected",
    [
        (None, 4, (4, 1)),
        ("", 8, (8, 1)),
        ("data=4,model=1", 4, (4, 1)),
        ("data=2,model=2", 4, (2, 2)),
        ("model=2", 8, (4, 2)),
        ("data=-1,model=4", 8, (2, 4)),
        (" data = 1 , model = 1 ", 1, (1, 1)),
        ("data=2", 2, (2, 1)),
        ("data=-1", 3, (3, 1)),
    ],
)
def test_parse_mesh(spec, n, expected):
    assert sh.parse_mesh(spec, num_devices=n).shape == expected


@pytest.mark.parametrize(
    "spec,n,msg",
    [
        ("data=3", 4, "= 3 but 4 devices"),
        ("data=2,model=3", 4, "6 but 4 devices"),
        ("pipe=2", 2, "unknown axis 'pipe'"),
        ("data=2,data=2", 4, "given twice"),
        ("data=x", 4, "integer"),
        ("data=0", 4, ">= 1"),
        ("data4", 4, "axis=size"),
        ("model=3", 4, "3 does not divide the 4 devices"),
        ("data=-1,model=-1", 4, "at most one"),
    ],
)
def test_parse_mesh_rejects(spec, n, msg):
    with pytest.raises(ConfigError, match=msg):
        sh.parse_mesh(spec, num_devices=n)


def test_make_mesh_over_the_visible_devices():
    n = jax.device_count()
    assert dict(sh.make_mesh().shape) == {"data": n, "model": 1}
    # explicit sizes below the device count take the first devices (one process)
    assert dict(sh.make_mesh("data=1").shape) == {"data": 1, "model": 1}
    assert sh.make_mesh("data=1").devices.flat[0] == jax.devices()[0]
    with pytest.raises(ConfigError, match=f"{n + 1} but {n} devices"):
        sh.make_mesh(f"data={n + 1}")


@pytest.mark.parametrize(
    "spec,fixed",
    [
        (None, None),
        ("", None),
        ("data=2", 2),
        (" data = 2 , model = 3 ", 6),
        ("model=2", None),
        ("data=-1,model=2", None),
        ("data=2,model=-1", None),
        (sh.MeshConfig(2, 2), 4),
    ],
)
def test_one_reader_of_the_mesh_spec(spec, fixed):
    """make_mesh and parse_mesh read --mesh through one function: the sizes it fixes decide whether
    make_mesh takes the first devices, and malformed text fails there with parse_mesh's message."""
    assert sh._read_mesh_spec(spec).fixed_size == fixed


@pytest.mark.parametrize("spec,msg", [("data=x", "integer"), ("data=0", ">= 1"), ("pipe=1", "unknown axis")])
def test_make_mesh_rejects_like_parse_mesh(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        sh.make_mesh(spec)


def test_batch_mesh_divides_the_batch():
    n = jax.device_count()
    for batch in (1, 2, 3, 10, 64):
        mesh = sh.batch_mesh(batch)
        assert batch % mesh.shape["data"] == 0 and mesh.shape["data"] == math.gcd(batch, n)


def test_await_each_step_only_on_multi_device_cpu_meshes():
    class Dev:
        def __init__(self, platform):
            self.platform = platform

    class FakeMesh:
        def __init__(self, *platforms):
            self.devices = np.array([Dev(p) for p in platforms], dtype=object).reshape(len(platforms), 1)

    assert not sh.await_each_step(sh.make_mesh("data=1,model=1"))
    assert sh.await_each_step(FakeMesh("cpu", "cpu"))
    assert not sh.await_each_step(FakeMesh("gpu", "gpu"))
    assert not sh.await_each_step(FakeMesh("cpu"))


def test_leaf_spec_rules_and_fsdp():
    rules = sh.GPT_TENSOR_PARALLEL_RULES
    m22 = {"data": 2, "model": 2}
    assert sh.leaf_spec("blocks/0/attn_wq", (8, 4), m22, rules=rules) == P("model")
    assert sh.leaf_spec("blocks/0/attn_wo/w", (4, 8), m22, rules=rules) == P(None, "model")
    assert sh.leaf_spec("blocks/mlp_fc1", (3, 16, 4), m22, rules=rules) == P(None, "model")  # stacked layers
    assert sh.leaf_spec("opt/0/mu/blocks/mlp_fc2", (4, 16), m22, rules=rules) == P(None, "model")
    assert sh.leaf_spec("mlp_fc1/b", (16,), m22, rules=rules) == P("model")
    assert sh.leaf_spec("mlp_fc2/b", (4,), m22, rules=rules) == P()
    assert sh.leaf_spec("not_attn_wq", (8, 4), m22, rules=rules) == P()  # names match whole
    # FSDP: the largest free divisible axis goes to 'data', small leaves stay replicated
    assert sh.leaf_spec("mlp_fc1", (16, 8), m22, rules=rules, fsdp=True, fsdp_min_size=1) == P("model", "data")
    assert sh.leaf_spec("embed", (6, 10), m22, fsdp=True, fsdp_min_size=1) == P(None, "data")
    assert sh.leaf_spec("embed", (6, 10), m22, fsdp=True, fsdp_min_size=61) == P()
    assert sh.leaf_spec("embed", (5, 7), m22, fsdp=True, fsdp_min_size=1) == P()  # nothing divides
    # size-1 axes shard nothing
    assert sh.leaf_spec("attn_wq", (8, 4), {"data": 4, "model": 1}, rules=rules) == P()
    with pytest.raises(ConfigError, match="attn_wk.*dim 0 of size 5.*'model'"):
        sh.leaf_spec("attn_wk", (5, 4), m22, rules=rules)
    with pytest.raises(ConfigError, match="rank 2"):
        sh.leaf_spec("attn_wq", (8,), m22, rules=rules)


def test_tree_pspecs_covers_optimizer_state():
    import jax.numpy as jnp
    import optax

    params = {"attn_wq": jnp.zeros((8, 4)), "attn_wo": jnp.zeros((4, 8))}
    state = (params, optax.adam(1e-3).init(params))
    specs = sh.tree_pspecs(state, {"data": 1, "model": 2}, rules=sh.GPT_TENSOR_PARALLEL_RULES)
    assert specs[1][0].mu["attn_wq"] == P("model") and specs[1][0].nu["attn_wo"] == P(None, "model")
    assert specs[1][0].count == P()


def test_shard_batch_single_process_and_errors():
    mesh = sh.make_mesh()
    batch = {"x": np.ones((4, 3), np.float32), "y": np.zeros((4,), np.int32)}
    out = sh.shard_batch(batch, mesh)
    assert out["x"].shape == (4, 3) and sh.local_rows(mesh, 4) == slice(0, 4)
    with pytest.raises(DataError, match="batch leaf y has 3 rows"):
        sh.shard_batch({"x": np.ones((4, 3)), "y": np.zeros((3,))}, mesh)


def test_maybe_initialize_distributed_validation():
    assert dist.maybe_initialize_distributed(env={}) is False
    assert dist.maybe_initialize_distributed(num_processes=1, env={}) is False
    with pytest.raises(ConfigError, match="missing: coordinator, process_id"):
        dist.maybe_initialize_distributed(num_processes=2, env={})
    with pytest.raises(ConfigError, match="missing: num_processes"):
        dist.maybe_initialize_distributed(env={"JAX_COORDINATOR_ADDRESS": "10.0.0.1:99", "JAX_PROCESS_ID": "1"})
    with pytest.raises(ConfigError, match="must be in"):
        dist.maybe_initialize_distributed("h:1234", 2, 2, env={})
    with pytest.raises(ConfigError, match="host:port"):
        dist.maybe_initialize_distributed("localhost", 2, 0, env={})
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES must be an integer"):
        dist.maybe_initialize_distributed(env={"JAX_NUM_PROCESSES": "two"})
    # this process has already computed with JAX: joining now must be refused, not hang
    with pytest.raises(ConfigError, match="before any JAX computation"):
        dist.maybe_initialize_distributed("127.0.0.1:1234", 2, 0, env={})


def test_cli_args_give_no_mesh_on_one_device_unless_asked():
    import argparse

    p = argparse.ArgumentParser()
    dist.add_distributed_args(p)
    n = jax.device_count()
    assert dist.mesh_from_args(p.parse_args([])) is None  # the loop's default mesh (batch_mesh)
    args = p.parse_args(["--mesh", "data=1", "--fsdp"])
    assert args.fsdp and dict(dist.mesh_from_args(args).shape) == {"data": 1, "model": 1}
    with pytest.raises(ConfigError, match=f"{2 * n} but {n} devices"):
        dist.mesh_from_args(p.parse_args(["--mesh", f"data={n},model=2"]))
    with pytest.raises(ConfigError, match="missing: coordinator"):
        dist.mesh_from_args(p.parse_args(["--num-processes", "2", "--process-id", "0"]))


@pytest.mark.parametrize("system", ["mlp", "gpt"])
@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--mesh", "data=64,model=2"], "= 128 but"),
        (["--mesh", "data=2,data=2"], "given twice"),
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2"], "missing: process_id"),
    ],
)
def test_cli_rejects_bad_mesh_and_distributed_flags(system, argv, msg, capsys):
    from jaxsys.cli import main

    assert main([system, "train", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_cpu_devices_env_replaces_count():
    env = dist.cpu_devices_env(4, base={"XLA_FLAGS": "--foo --xla_force_host_platform_device_count=2"})
    assert env["XLA_FLAGS"] == "--foo --xla_force_host_platform_device_count=4"
    assert env["JAX_PLATFORMS"] == "cpu"


# ------------------------------------------------------------------- simulated devices (children)
# The intended layouts written out by hand (w_OxI: fc1 split by output rows, fc2 by input columns).
EXPECTED = {
    (4, 1, False): {"mlp_fc1/w": "P()", "mlp_fc1/b": "P()", "mlp_fc2/w": "P()", "mlp_fc2/b": "P()"},
    (4, 1, True): {"mlp_fc1/w": "P('data',)", "mlp_fc1/b": "P()", "mlp_fc2/w": "P(None, 'data')", "mlp_fc2/b": "P()"},
    (2, 2, False): {
        "mlp_fc1/w": "P('model',)",
        "mlp_fc1/b": "P('model',)",
        "mlp_fc2/w": "P(None, 'model')",
        "mlp_fc2/b": "P()",
    },
    (2, 2, True): {
        "mlp_fc1/w": "P('model', 'data')",
        "mlp_fc1/b": "P('model',)",
        "mlp_fc2/w": "P('data', 'model')",
        "mlp_fc2/b": "P()",
    },
    (1, 1, False): {"mlp_fc1/w": "P()", "mlp_fc1/b": "P()", "mlp_fc2/w": "P()", "mlp_fc2/b": "P()"},
    (1, 1, True): {"mlp_fc1/w": "P()", "mlp_fc1/b": "P()", "mlp_fc2/w": "P()", "mlp_fc2/b": "P()"},
}


def test_sharded_step_matches_single_device_on_meshes():
    res = run_worker(4, "parity")
    assert res["device_count"] == 4
    seen = set()
    for case in res["cases"]:
        d, m = case["mesh"]
        key = (d, m, case["fsdp"])
        seen.add(key)
        np.testing.assert_allclose(case["losses"], case["ref_losses"], rtol=TOL, atol=TOL, err_msg=str(key))
        assert case["param_max_diff"] < TOL, key
        assert len(case["devices_used"]) == d * m, key
        # the compiled step's inputs are laid out as intended: params and both Adam moments per rule,
        # the step counter replicated, the batch split over 'data'
        compiled = case["compiled"]
        for leaf, spec in EXPECTED[key].items():
            assert compiled[f"0/0/{leaf}"] == spec, (key, leaf, compiled)
            assert compiled[f"0/1/0/mu/{leaf}"] == spec and compiled[f"0/1/0/nu/{leaf}"] == spec, (key, leaf)
            assert case["out_specs"][leaf] == spec, (key, leaf)
        assert compiled["0/1/0/count"] == "P()"
        batch_spec = "P('data',)" if d > 1 else "P()"
        assert compiled["1/x"] == batch_spec and compiled["1/y"] == batch_spec, key
        assert compiled == case["intended"], key
    assert seen == set(EXPECTED)


def test_checkpoint_saved_on_4_devices_restores_on_2_and_1(tmp_path):
    saved = run_worker(4, "ckpt_save", str(tmp_path))
    assert saved["device_count"] == 4 and saved["saved_specs"]["mlp_fc1/w"] == "P('model', 'data')"
    res = run_worker(2, "ckpt_restore", str(tmp_path))
    assert res["device_count"] == 2
    assert [r["mesh"] for r in res["runs"]] == ["data=2,model=1", "data=1,model=2", "data=1,model=1"]
    for r in res["runs"]:
        assert r["meta"] == {"mesh": "data=2,model=2"}
        assert r["shardings_match"], r
        np.testing.assert_allclose(r["losses"], saved["losses"], rtol=TOL, atol=TOL, err_msg=r["mesh"])
        assert r["param_max_diff_vs_4dev"] < TOL, r
    assert res["runs"][0]["restored_specs"]["mlp_fc1/w"] == "P('data',)"
    assert res["runs"][1]["restored_specs"]["mlp_fc2/w"] == "P(None, 'model')"


def test_two_processes_on_loopback_agree_with_one(tmp_path):
    ref = run_worker(1, "single", str(tmp_path / "single.npz"))
    port = str(sharding_util.free_port())
    out = tmp_path / "multi.npz"
    outs = sharding_util.run_processes(
        [[sys.executable, WORKER, "multiproc", out, port, "2", pid, "data=2,model=2"] for pid in (0, 1)],
        n_devices=2,
        timeout=120,
    )
    results = []
    for rc, stdout, stderr in outs:
        assert rc == 0, f"process failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
        results.append(sharding_util.result_of(stdout))
    assert [r["process_index"] for r in results] == [0, 1]
    for r in results:
        assert r["process_count"] == 2 and r["device_count"] == 4 and r["local_device_count"] == 2
        np.testing.assert_allclose(r["losses"], ref["losses"], rtol=TOL, atol=TOL)
        assert r["specs"]["mlp_fc1/w"] == "P('model', 'data')"
    assert [r["rows"] for r in results] == [[0, 4], [4, 8]]  # each process loaded half the batch
    a, b = np.load(out), np.load(tmp_path / "single.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) == 14
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=TOL, atol=TOL, err_msg=k)
