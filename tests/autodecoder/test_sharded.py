"""jaxsys/autodecoder/sharded.py: vmapped seeds split over 4 simulated CPU devices (child process)."""

from pathlib import Path

import pytest

from jaxsys.autodecoder.sharded import check_seed_mesh
from jaxsys.errors import ConfigError
from jaxsys.train import sharding as sh
from tests.sharding_util import run_worker

pytestmark = pytest.mark.x64  # float64 until this module is checked in float32


def test_seed_mesh_validation(tiny):
    import dataclasses

    check_seed_mesh(sh.make_mesh(), tiny)  # one device, one seed: fine
    with pytest.raises(ConfigError, match="not divisible"):
        check_seed_mesh(_FakeMesh(2), dataclasses.replace(tiny, num_seeds=3))
    with pytest.raises(ConfigError, match="one seed cannot be spread"):
        check_seed_mesh(_FakeMesh(2), tiny)


class _FakeMesh:
    def __init__(self, data):
        self.shape = {"data": data, "model": 1}


def test_seeds_on_4_devices_match_vmap_on_one(tmp_path):
    r = run_worker(Path(__file__).with_name("_sharded_worker.py"), tmp_path, timeout=240)
    assert r["device_count"] == 4
    (case,) = r["cases"]
    assert case["loss_max_diff"] < 1e-5 and case["param_max_diff"] < 1e-5
    assert case["seeds_per_device"] == [1]  # 4 seeds, one per device
    assert set(case["specs"].values()) == {"P('data',)"} and "0/Z" in case["specs"] and "1" in case["specs"]
    # the CLI with --mesh data=4 trains the same 4 seeds as the one-device vmapped burst
    assert r["cli_rc"] == 0 and len(r["cli_losses"]) == 2 and len(r["cli_losses"][0]) == 4
    import numpy as np

    np.testing.assert_allclose(r["cli_losses"][0], r["single_first_burst"], rtol=1e-5, atol=1e-5)
    assert r["bad_seeds_error"].startswith("ConfigError: num_seeds=6 is not divisible")
