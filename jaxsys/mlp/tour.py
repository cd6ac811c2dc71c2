"""Tour stage: train the MLP briefly on digits, check its gradients, plot the loss curve."""

from pathlib import Path

from jaxsys.mlp.checks import check_mlp_gradients
from jaxsys.mlp.train import TrainConfig, train
from jaxsys.train import atomic_write_json, read_metrics
from jaxsys.train.io import save_figure


def _plot(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [m for m in metrics if m.get("split") == "train"]
    te = [m for m in metrics if m.get("split") == "test"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot([m["step"] for m in tr], [m["loss"] for m in tr], label="train (minibatch)")
    a1.plot([m["step"] for m in te], [m["loss"] for m in te], "o-", label="test")
    a1.set_yscale("log"), a1.set_xlabel("step"), a1.set_ylabel("cross-entropy"), a1.legend()
    a2.plot([m["step"] for m in tr], [m["accuracy"] for m in tr], label="train (minibatch)")
    a2.plot([m["step"] for m in te], [m["accuracy"] for m in te], "o-", label="test")
    a2.set_xlabel("step"), a2.set_ylabel("accuracy"), a2.legend()
    fig.suptitle("MLP 64-64-64-10 on 8x8 digits, hand backward + hand Adam")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def run_stage(run_dir: Path, quick: bool) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = 150 if quick else 3000
    cfg = TrainConfig(
        task="classify",
        hidden=(64, 64),
        steps=steps,
        batch=64,
        log_every=10 if quick else 25,
        eval_every=50 if quick else 250,
        checkpoint_every=steps,
    )
    s = train(cfg, run_dir / "train", log=lambda m: None, progress=False)
    g = check_mlp_gradients("classify", hidden=(16, 16) if quick else (32, 32), batch=16)
    _plot(read_metrics(run_dir / "train" / "metrics.jsonl"), run_dir / "loss_curve.png")
    result = {"train": s, "gradcheck": g}
    atomic_write_json(run_dir / "mlp.json", result)
    return {
        "steps": s["steps"],
        "test_accuracy": round(s["test_accuracy"], 4),
        "grad_rel_err": float(f"{g['rel_err_vs_jax_grad']:.2e}"),
        "fd_check": g["finite_differences"],
    }
