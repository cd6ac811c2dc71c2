"""Viewer key handlers, driven headless on the Agg backend."""

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backend_bases import KeyEvent  # noqa: E402

from jaxsys.autodecoder.viewer import Viewer  # noqa: E402
from jaxsys.errors import ConfigError  # noqa: E402


def test_keys(tiny):
    v = Viewer(tiny, jax.random.key(0), burst_steps=4, res=16, tau=0.02)
    v.connect()
    assert v.fig is not None and len(v.images) == 3
    heat0 = [im.copy() for im in v.images]
    assert v.handle_key("T").startswith("step 4 ")
    assert int(v.state.step) == 4 and np.isfinite(v.last_loss)
    assert any(not np.allclose(a, b) for a, b in zip(heat0, v.images))  # the picture moved
    v.handle_key("B")
    assert v.batch_size == 64
    v.handle_key("b")
    v.handle_key("b")
    assert v.batch_size == 16
    v.handle_key("t")  # lower case works too; new batch size
    assert int(v.state.step) == 8 and "B=16" in v.status
    v.handle_key("M")
    assert v.show_mask and not v.soft
    assert all(set(np.unique(im)) <= {0.0, 1.0} for im in v.images)
    v.handle_key("S")
    assert v.soft and all(np.all((im > 0) & (im < 1)) for im in v.images)
    soft = [im.copy() for im in v.images]
    v.handle_key("]")
    assert v.tau == pytest.approx(0.03)
    v.handle_key("[")
    v.handle_key("[")
    assert v.tau == pytest.approx(0.02 / 1.5)
    # a sharper sigmoid pushes values away from 0.5
    assert np.mean(np.abs(v.images[0] - 0.5)) >= np.mean(np.abs(soft[0] - 0.5))
    v.handle_key("m")
    assert not v.show_mask
    before = v.status
    assert v.handle_key("x") == before  # unknown keys ignored
    assert v.handle_key("R") == before
    # a real matplotlib key event reaches the handler through connect()
    v.fig.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", v.fig.canvas, "M"))
    assert v.show_mask
    for _ in range(20):
        v.handle_key("b")
    assert v.batch_size == 1  # clamped, never 0


def test_bad_viewer_input(tiny):
    with pytest.raises(ConfigError, match="tau"):
        Viewer(tiny, jax.random.key(0), tau=0.0)
    with pytest.raises(ConfigError, match="burst_steps"):
        Viewer(tiny, jax.random.key(0), burst_steps=0)
