"""Real train step smoke test, resume, accumulation, bf16, CLI and tour stage."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.cli import main
from jaxsys.errors import ConfigError, DataError
from jaxsys.ginr import data as gd
from jaxsys.ginr import model as gm
from jaxsys.ginr import plots
from jaxsys.ginr import train as gt
from jaxsys.ginr.tour import QUICK_MODEL, QUICK_TRAIN
from jaxsys.train.interrupt import save_on_interrupt

pytestmark = pytest.mark.x64  # float64: parity against jax.grad, references or a float64 run

# the tour's quick configuration, shared with the CLI smoke test and the tour test below, so the jitted
# step compiles once for the whole module
# (evaluation on all 20 packaged images and 8-image PNGs, as in the tour, so those compile once too)
MC = QUICK_MODEL
TC = dataclasses.replace(QUICK_TRAIN, eval_every=2, eval_images=20, checkpoint_every=2)


def test_train_smoke_and_resume(tmp_path):
    x, _ = gd.load_png20()
    x32 = x.astype(np.float32)
    s = gt.train(MC, dataclasses.replace(TC, stop_at=2), x, x, tmp_path, progress=False)
    assert s["steps"] == 2 and np.isfinite(s["final_test_psnr"])
    n_compiled = gt.train_step._cache_size()
    s2 = gt.train(MC, dataclasses.replace(TC, stop_at=4), x, x, tmp_path, progress=False)  # resumes
    assert s2["steps"] == 4
    assert gt.train_step._cache_size() == n_compiled  # no recompilation
    # resuming with another model shape is a clear error before orbax sees the checkpoint
    with pytest.raises(ConfigError, match="another model config \\(hidden: 8 -> 16\\)"):
        gt.train(dataclasses.replace(MC, hidden=16), dataclasses.replace(TC, stop_at=6), x, x, tmp_path, progress=False)
    recs = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "loss" in r]
    assert steps == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in recs if "loss" in r)
    for f in ("reconstructions.png", "psnr_curve.png", "summary.json", "config.json"):
        assert (tmp_path / f).is_file()
    # the reported PSNR is the mean over images of -10 log10 MSE on the full grid
    from jaxsys.train import Checkpointer

    with Checkpointer(tmp_path / "ckpt") as ck:
        st, _ = ck.restore(like=gt.init_state(jax.random.key(0), MC, TC))
    assert isinstance(st, gt.TrainState) and int(st.step) == 4
    ev = gt.evaluate(st.params, x, MC)
    rec = np.asarray(gt.eval_step(st.params, jnp.asarray(x32 / 255), MC))
    ref = np.mean([-10 * np.log10(np.mean((rec[i] - x32[i] / 255) ** 2)) for i in range(len(x))])
    assert abs(ev["psnr"] - ref) < 1e-3 and ev["images"] == 20


def test_ctrl_c_saves_the_newest_step_and_resume_matches(tmp_path, monkeypatch):
    """A real SIGINT while step 3 is being dispatched: step 3 completes and is checkpointed (not only
    the last periodic one), nothing is printed before the save, and the resumed run ends with the
    same parameters as an uninterrupted one."""
    import os
    import signal

    from jaxsys.train import Checkpointer

    x, _ = gd.load_png20()
    tc = dataclasses.replace(TC, checkpoint_every=0, eval_every=0, stop_at=5)  # no periodic checkpoints
    full = gt.train(MC, tc, x, x, tmp_path / "full", progress=False, log=lambda m: None)
    real = gt.train_step
    logged = []

    def interrupted(state, *a):
        if int(state.step) == 2:  # Ctrl-C arrives while step 3 is dispatched
            os.kill(os.getpid(), signal.SIGINT)
            ckpt_dir = tmp_path / "cut" / "ckpt"
            logged.append(("steps on disk at the signal", sorted(p.name for p in ckpt_dir.iterdir())))
        return real(state, *a)

    monkeypatch.setattr(gt, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gt.train(MC, tc, x, x, tmp_path / "cut", progress=False, log=logged.append)
    assert logged[-1] == "interrupted: checkpoint saved at step 3"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    monkeypatch.setattr(gt, "train_step", real)
    resumed = gt.train(MC, tc, x, x, tmp_path / "cut", progress=False, log=logged.append)
    assert any("resumed from step 3" in str(m) for m in logged) and resumed["steps"] == full["steps"] == 5
    like = gt.init_state(jax.random.key(0), MC, tc)
    with Checkpointer(tmp_path / "full" / "ckpt") as a, Checkpointer(tmp_path / "cut" / "ckpt") as b:
        pa, pb = a.restore(like=like)[0].params, b.restore(like=like)[0].params
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), pa, pb)
    # a state whose buffers were donated to a step that never returned cannot be saved: said, not raised
    gone = {"step": jnp.ones(()), "w": jnp.ones(3)}
    gone["w"].delete()
    with Checkpointer(tmp_path / "gone") as ck:
        save_on_interrupt(gone, 0, lambda n, st: ck.save(n, st), logged.append)
        assert ck.latest_step() is None
    assert "lost mid-step" in logged[-1]


def test_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    import os
    import signal

    x, _ = gd.load_png20()
    tc = dataclasses.replace(TC, checkpoint_every=0, eval_every=0, stop_at=5)
    real = gt.train_step

    def twice(state, *a):
        if int(state.step) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # raises here, before step 2 is dispatched
        return real(state, *a)

    monkeypatch.setattr(gt, "train_step", twice)
    logged = []
    with pytest.raises(KeyboardInterrupt):
        gt.train(MC, tc, x, x, tmp_path, progress=False, log=logged.append)
    assert logged[-1] == "interrupted: checkpoint saved at step 1"  # the last completed step


def test_accumulation_and_bf16():
    p = {"w": jnp.ones(3)}
    tx = gt.make_optimizer(gt.TrainConfig(steps=10, accum_steps=2, warmup_steps=0))
    st = tx.init(p)
    u1, st = tx.update({"w": jnp.ones(3)}, st, p)
    assert float(jnp.abs(u1["w"]).max()) == 0.0  # first micro-batch: no update yet
    u2, st = tx.update({"w": jnp.ones(3)}, st, p)
    assert float(jnp.abs(u2["w"]).max()) > 0
    # float32 loss from the real (already compiled) step, which reports the loss before its update;
    # bfloat16 loss and gradients from one more compile
    from jaxsys.train import sharding as sh

    tc = TC.step_config()
    mesh = sh.make_mesh(None)  # placed as the loop places them (the state; a numpy batch): one compile
    st = jax.device_get(gt.init_state(jax.random.key(0), MC, tc))
    params = jax.tree_util.tree_map(jnp.asarray, st.params)
    b = gd.make_batch(gd.load_png20()[0], np.arange(TC.batch_size), TC.num_sample_coords, np.random.default_rng(0))
    _, m = gt.train_step(sh.put_tree(st, sh.tree_shardings(st, mesh)), b, MC, tc)
    l32 = float(m["loss"])
    (l16, _), g = jax.jit(jax.value_and_grad(lambda p: gt.loss_fn(p, b, MC, True), has_aux=True))(params)
    assert abs(float(l16) - l32) < 0.02 * l32
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(g))  # f32 master gradients


def test_train_rejects_bad_input(tmp_path):
    x, _ = gd.load_png20()
    with pytest.raises(DataError, match="32, 32, 3"):
        gt.train(MC, TC, x[:, :16, :16], x[:4], tmp_path, progress=False)
    with pytest.raises(DataError, match="must be uint8"):  # float images would be divided by 255 again
        gt.train(MC, TC, x / 255.0, x, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="TrainConfig.lr must be finite and > 0, got -1"):
        gt.TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="TrainConfig.checkpoint_every must be >= 0"):
        gt.TrainConfig(checkpoint_every=-1)
    with pytest.raises(ConfigError, match="coord_jitter must be a number of pixels in \\[0, 0.5\\]"):
        gt.TrainConfig(coord_jitter=0.75)
    bad = gd.make_batch(x, np.arange(2), 8, np.random.default_rng(0))
    bad["coords"] = bad["coords"] * 2
    with pytest.raises(Exception, match="\\[-1, 1\\]"):
        gt.check_batch(bad, MC)


def test_coord_jitter_reaches_the_step_without_a_recompile(tmp_path):
    """The loop feeds jittered coordinates (other parameters after 2 steps than without jitter), the
    jitter is no part of the compiled step, and it is recorded in config.json."""
    x, _ = gd.load_png20()
    tc = dataclasses.replace(TC, stop_at=2, eval_every=0, checkpoint_every=0, coord_jitter=0.0)
    gt.train(MC, tc, x, x, tmp_path / "plain", progress=False, log=lambda m: None)
    n_compiled = gt.train_step._cache_size()
    gt.train(MC, dataclasses.replace(tc, coord_jitter=0.5), x, x, tmp_path / "jit", progress=False, log=lambda m: None)
    assert gt.train_step._cache_size() == n_compiled
    p0, _, s0 = gt.load_run(tmp_path / "plain")
    p1, _, s1 = gt.load_run(tmp_path / "jit")
    assert s0 == s1 == 2
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)))
    assert diff > 1e-6
    assert json.loads((tmp_path / "jit" / "config.json").read_text())["train"]["coord_jitter"] == 0.5


def test_cli_train_and_errors(tmp_path, capsys):
    rc = main(
        [
            "ginr",
            "train",
            "--data",
            "png20",
            "--dim",
            "16",
            "--num-lp",
            "4",
            "--depth",
            "1",
            "--hidden",
            "8",
            "--num-freqs",
            "3",
            "--batch",
            "10",
            "--coords",
            "256",
            "--steps",
            "30",
            "--lr",
            "3e-3",
            "--warmup",
            "5",
            "--eval-every",
            "0",
            "--checkpoint-every",
            "100",
            "--run-dir",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 30
    rc = main(["ginr", "train", "--data", str(tmp_path / "missing"), "--run-dir", str(tmp_path)])
    assert rc == 2 and "dataset path not found" in capsys.readouterr().err
    assert main(["ginr", "train", "--data", "png20", "--config", "huge"]) == 2
    for old in (["--quiet"], ["--ckpt-every", "5"], ["--out", "runs"]):  # the old spellings are gone
        with pytest.raises(SystemExit):
            main(["ginr", "train", "--data", "png20", *old])
    with pytest.raises(SystemExit):
        main(["ginr", "train", "--data", "png20", "--batch", "0"])
    assert "--batch must be >= 1, got 0" in capsys.readouterr().err
    # --matmul-dtype reaches the model config; a bad value is a clear error before anything is traced
    from jaxsys.cli import build_parser
    from jaxsys.ginr.cli import _model_config

    args = build_parser().parse_args(["ginr", "profile", "--config", "balanced", "--matmul-dtype", "bfloat16"])
    assert _model_config(args) == gm.get_config("balanced", matmul_dtype="bfloat16")
    assert main(["ginr", "train", "--data", "png20", "--matmul-dtype", "fp8"]) == 2
    assert "matmul_dtype must be one of ('float32', 'bfloat16'), got 'fp8'" in capsys.readouterr().err


def test_cli_render_and_eval(tmp_path, capsys):
    """`jaxsys ginr render` / `eval` on a run directory: the 3x rendering sampled at the sub-pixels whose
    centres are the 1x pixel centres equals the 1x reconstruction (one continuous function), and the
    reported PSNRs equal gt.evaluate of the checkpoint."""
    from PIL import Image

    x, _ = gd.load_png20()
    run = tmp_path / "run"
    gt.train(MC, dataclasses.replace(TC, stop_at=2), x, x, run, progress=False, log=lambda m: None)
    params, mc, step = gt.load_run(run)
    assert mc == MC and step == 2
    capsys.readouterr()
    assert main(["ginr", "render", "--run-dir", str(run), "--scale", "3", "--count", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 4 and out["size"] == 3 * MC.image_size and (run / "render_3x.png").is_file()
    rec = np.asarray(gt.eval_step(params, jnp.asarray(x[:4] / 255.0, jnp.float32), MC))
    for i in range(4):
        sr = np.asarray(Image.open(run / "render_3x" / f"{i:03d}.png"), np.int32)
        assert sr.shape == (96, 96, 3)
        assert np.abs(sr[1::3, 1::3] - np.round(np.clip(rec[i], 0, 1) * 255)).max() <= 1
    assert abs(out["psnr_1x_mean"] - gt.evaluate(params, x[:4], MC)["psnr"]) < 0.01
    assert main(["ginr", "eval", "--run-dir", str(run), "--data", "png20", "--limit", "5"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == 5 and abs(ev["psnr"] - gt.evaluate(params, x[:5], MC)["psnr"]) < 1e-9
    # clear errors: not a run directory, an image of another size, a bad scale
    assert main(["ginr", "render", "--run-dir", str(tmp_path / "none")]) == 2
    assert "no config.json here" in capsys.readouterr().err
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(big)
    assert main(["ginr", "render", "--run-dir", str(run), "--images", str(big)]) == 2
    assert "big.png: image is 48x40, the model works on 32x32 images" in capsys.readouterr().err
    assert main(["ginr", "render", "--run-dir", str(run), "--scale", "17"]) == 2
    assert "scale must be an int >= 1 and <= 16, got 17" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="scale must be an int >= 1"):
        plots.render_1x_sx(params, x[:1] / 255.0, MC, 0)


def test_tour_stage_quick(tmp_path):
    from jaxsys.ginr.tour import run_stage

    r = run_stage(tmp_path / "ginr", quick=True)
    assert r["steps"] == 30 and r["psnr_db"] > 8
    if jax.device_count() == 1:  # with several devices, tests of other meshes compile their own step
        assert gt.train_step._cache_size() == 1  # tests and tour shared one compiled step
    assert (tmp_path / "ginr" / "reconstructions.png").is_file()


def test_check_resume_config(tmp_path):
    gt.check_resume_config(tmp_path, MC)  # no config.json: a fresh run
    (tmp_path / "config.json").write_text(json.dumps({"model": dataclasses.asdict(MC)}))
    gt.check_resume_config(tmp_path, MC)
    # numerics-only fields may change on resume (same parameters, same maths)
    gt.check_resume_config(
        tmp_path, dataclasses.replace(MC, matmul_dtype="bfloat16", scan_chunk=8, scan_mode="associative")
    )
    with pytest.raises(ConfigError, match="dim: 16 -> 32, depth: 1 -> 2"):
        gt.check_resume_config(tmp_path, dataclasses.replace(MC, dim=32, depth=2))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable run config"):
        gt.check_resume_config(tmp_path, MC)


def test_eval_subset_spreads_over_a_class_sorted_split():
    """The periodic/final evaluation takes images spread over the test set: the CIFAR-10 splits are
    stored sorted by class, and their first 1,000 images are all airplanes."""
    labels = np.repeat(np.arange(10), 100)
    images = labels[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    sub = gt.spread_subset(images, 100)
    assert len(sub) == 100 and sorted(set(sub[:, 0, 0, 0].tolist())) == list(range(10))
    assert gt.spread_subset(images, 0) is images and gt.spread_subset(images, 5000) is images
