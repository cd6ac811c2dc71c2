"""Test session setup: CPU, Agg plots, float32 by default (the path users run).

A module or test that compares gradients in float64 opts in with `pytestmark = pytest.mark.x64`
(or `@pytest.mark.x64`): x64 is switched on for that test only and switched back afterwards.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "x64: run this test with jax_enable_x64 (float64 gradient parity)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Every test runs in the precision its marks ask for, set before any of its fixtures is built
    (a module-scoped fixture of an x64 module then makes float64 arrays too)."""
    jax.config.update("jax_enable_x64", item.get_closest_marker("x64") is not None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project root (present in CI; a clone on its own skips these tests)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder missing: {SHARED_DATA} (tests that read it need it)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _default_sigint():
    """Every test starts with Python's own Ctrl-C handler, whatever an earlier test in the same worker
    (or the worker's parent) left installed, so the Ctrl-C tests test the training loops, not the
    ambient handler."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)
