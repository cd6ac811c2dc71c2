"""The seeds axis of jaxsys/autodecoder/train.py on a mesh: validation on whatever devices are visible,
and 4 seeds split over 4 simulated CPU devices (child process)."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxsys.autodecoder.train import check_seed_mesh, seed_mesh
from jaxsys.errors import ConfigError
from jaxsys.train import sharding as sh
from tests.sharding_util import run_worker


class _FakeMesh:
    def __init__(self, data):
        self.shape = {"data": data, "model": 1}


def test_seed_mesh_validation(tiny):
    check_seed_mesh(sh.make_mesh(None, devices=jax.devices()[:1]), tiny)  # one device, one seed: fine
    n = jax.device_count()
    check_seed_mesh(sh.make_mesh(None), dataclasses.replace(tiny, num_seeds=n))  # every visible device
    with pytest.raises(ConfigError, match="not divisible"):
        check_seed_mesh(_FakeMesh(2), dataclasses.replace(tiny, num_seeds=3))
    with pytest.raises(ConfigError, match="one seed cannot be spread"):
        check_seed_mesh(_FakeMesh(2), tiny)


def test_default_mesh_fits_the_seeds(tiny):
    """train(mesh=None) never fails for want of devices: one seed gets one device, and n seeds as
    many devices as divide n, whatever the visible count."""
    n = jax.device_count()
    for seeds in (1, 2, 3, 4, 6):
        mesh = seed_mesh(dataclasses.replace(tiny, num_seeds=seeds))
        assert mesh.shape["data"] == np.gcd(seeds, n) and mesh.shape["model"] == 1
        check_seed_mesh(mesh, dataclasses.replace(tiny, num_seeds=seeds))


def test_seeds_on_4_devices_match_vmap_on_one(tmp_path):
    r = run_worker(Path(__file__).with_name("_sharded_worker.py"), tmp_path, timeout=300)
    assert r["device_count"] == 4
    (case,) = r["cases"]
    assert case["loss_max_diff"] < 1e-5 and case["param_max_diff"] < 1e-5
    assert case["seeds_per_device"] == [1] and case["loss_seeds_per_device"] == [1]  # 4 seeds, one per device
    specs = case["specs"]
    assert set(specs.values()) == {"P('data',)"} and "0/latents" in specs and "1" in specs
    assert r["default_mesh_data"] == {"1": 1, "2": 2, "4": 4, "6": 2, "8": 4}
    # the CLI (with --mesh data=4 or the default mesh) trains the same 4 seeds as the one-device step
    for name in ("mesh", "default"):
        assert r[f"cli_rc_{name}"] == 0
        losses = r[f"cli_losses_{name}"]
        assert len(losses) == 2 and len(losses[0]) == 4
        np.testing.assert_allclose(losses[0], r["single_first_burst"], rtol=1e-5, atol=1e-5)
    assert r["cli_rc_one_seed"] == 0
    assert r["bad_seeds_error"].startswith("ConfigError: num_seeds=6 is not divisible")
    assert r["one_seed_error"].startswith("ConfigError: one seed cannot be spread over 4 devices")
