"""The GPT train step and loop of jaxsys/gpt/train.py on device meshes (basename unique across tests/: no __init__.py here) on 4 simulated CPU devices (a child process: this one has 1 device)."""

from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxsys.errors import ConfigError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.train import TrainConfig, state_pspecs
from jaxsys.train import sharding as sh
from tests.sharding_util import run_worker

TOL = 1e-5


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_worker(Path(__file__).with_name("_sharded_worker.py"), tmp_path_factory.mktemp("gpt_sharded"))


def test_state_pspecs_megatron_layout():
    cfg = GPTConfig(vocab_size=10, n_embd=8, n_head=2, n_layer=1, block_size=4)
    specs = state_pspecs(TrainConfig().step_config(cfg), {"data": 1, "model": 2})
    p, mu = specs.params, specs.opt_state[0].mu
    for name in ("attn_wq", "attn_wk", "attn_wv", "mlp_fc1"):
        assert p[f"layer0.{name}"] == P("model") and mu[f"layer0.{name}"] == P("model")
    for name in ("attn_wo", "mlp_fc2"):
        assert p[f"layer0.{name}"] == P(None, "model") and mu[f"layer0.{name}"] == P(None, "model")
    assert p["wte"] == p["wpe"] == p["lm_head"] == P()
    with pytest.raises(ConfigError, match="attn_w.*not divisible"):
        state_pspecs(
            TrainConfig().step_config(GPTConfig(vocab_size=10, n_embd=6, n_head=2, n_layer=1, block_size=4)),
            {"data": 1, "model": 4},
        )


def _expected(name, d, m, fsdp):
    """Hand-written intended layout of one GPT matrix ([E,E] / [4E,E] / [E,4E], w_OxI)."""
    split_rows = any(k in name for k in ("attn_wq", "attn_wk", "attn_wv", "mlp_fc1"))
    split_cols = any(k in name for k in ("attn_wo", "mlp_fc2"))
    if m > 1 and split_rows:
        return "P('model', 'data')" if fsdp else "P('model',)"
    if m > 1 and split_cols:
        return "P('data', 'model')" if fsdp else "P(None, 'model')"
    return "P()"


def test_one_step_on_meshes_equals_single_device(result):
    r = result["parity"]
    assert r["device_count"] == 4
    assert [(c["mesh"], c["fsdp"]) for c in r["cases"]] == [([4, 1], False), ([2, 2], True), ([1, 1], False)]
    for c in r["cases"]:
        (d, m), fsdp = c["mesh"], c["fsdp"]
        np.testing.assert_allclose(c["losses"], r["ref_losses"], rtol=TOL, atol=TOL, err_msg=str(c["mesh"]))
        assert c["param_max_diff"] < TOL, c["mesh"]
        specs = c["specs"]
        for i in range(2):
            for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2"):
                want = _expected(name, d, m, fsdp)
                assert specs[f"0/params/layer{i}.{name}"] == want, (c["mesh"], fsdp, name)
                assert specs[f"0/opt_state/0/mu/layer{i}.{name}"] == want
                assert specs[f"0/opt_state/0/nu/layer{i}.{name}"] == want
        for k in ("1", "2", "3"):  # tokens, targets, mask
            assert specs[k] == ("P('data',)" if d > 1 else "P()"), (c["mesh"], k)
        assert specs["0/step"] == "P()"


def test_train_loop_on_mesh_matches_single_device_and_resumes_on_2(result):
    """`jaxsys gpt train --mesh data=2,model=2` == single-device `train()`; its step-2 checkpoint
    resumed on a (1, 2) mesh of 2 devices ends at the same losses."""
    r = result["train"]
    assert r["mesh"]["mesh"] == "data=2,model=2" and r["resumed"]["mesh"] == "data=1,model=2"
    assert r["resumed"]["start_step"] == 2
    for k in ("train_loss", "val_loss"):
        assert abs(r["mesh"][k] - r["single"][k]) < TOL, k
        assert abs(r["resumed"][k] - r["single"][k]) < TOL, k


@pytest.mark.parametrize("loop", ["single", "mesh"])
def test_ctrl_c_saves_a_checkpoint_and_resume_ends_where_the_uninterrupted_run_does(loop, tmp_path):
    """A KeyboardInterrupt that does not wait for the step (raised from the on_step hook after step 3,
    as a second Ctrl-C would be; no periodic checkpoints) in `train` with mesh=None and with an
    explicit one-device mesh (in-process): a checkpoint at step 3, and resuming it ends at the
    uninterrupted run's parameters."""
    from jaxsys.gpt.data import from_text
    from jaxsys.gpt.train import train
    from jaxsys.train import Checkpointer

    data = from_text("\n".join(["anna", "bob", "carla", "dave", "eve", "frank"] * 3), "docs", 8, seed=0)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=8)
    tcfg = TrainConfig(steps=5, batch_size=4, eval_every=0, eval_batches=1, checkpoint_every=0)
    mesh = None if loop == "single" else sh.make_mesh("data=1,model=1")

    def run(*args, **kw):
        return train(*args, mesh=mesh, **kw)

    def ctrl_c(step, state):
        if step == 3:
            raise KeyboardInterrupt

    logs: list = []
    with pytest.raises(KeyboardInterrupt):
        run(data, cfg, tcfg, tmp_path, log=logs.append, progress=False, export=False, on_step=ctrl_c)
    assert "interrupted: checkpoint saved at step 3" in logs
    with Checkpointer(tmp_path / "ckpt") as ck:
        assert ck.all_steps() == [3]
    resumed = run(data, cfg, tcfg, tmp_path, log=None, progress=False, export=False)
    assert resumed.summary["start_step"] == 3 and int(np.asarray(resumed.state.step)) == 5
    full = train(data, cfg, tcfg, None, log=None, progress=False).state.params
    for k, v in full.items():
        np.testing.assert_allclose(np.asarray(resumed.state.params[k]), np.asarray(v), rtol=TOL, atol=TOL, err_msg=k)
