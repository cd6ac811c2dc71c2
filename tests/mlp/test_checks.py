import jax
import pytest

from jaxsys.errors import JaxsysError
from jaxsys.mlp import checks, model

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run


def test_check_passes_on_real_data():
    r = checks.check_mlp_gradients("regress", hidden=(4, 3), batch=6)
    assert r["rel_err_vs_jax_grad"] < 1e-12 and r["rel_err_2hidden_vs_general"] < 1e-12
    assert r["fd_rel_err"] < 1e-7 and r["sizes"] == [10, 4, 3, 1]


def test_check_catches_a_wrong_gradient(monkeypatch):
    # a classic mistake: the mean over the batch forgotten in db of the first layer
    def wrong(params, x, y, cfg):
        g = model.hand_grad(params, x, y, cfg)
        g[0] = {"w": g[0]["w"], "b": g[0]["b"] * x.shape[0]}
        return g

    monkeypatch.setattr(checks, "_hand_grad", jax.jit(wrong, static_argnames="cfg"))
    with pytest.raises(JaxsysError, match="rel_err_vs_jax_grad"):
        checks.check_mlp_gradients("regress", hidden=(4, 3), batch=6)
