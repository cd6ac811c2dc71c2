"""GPT stage of `jaxsys tour`: train a small GPT on the packaged names list (about a minute; quick:
a few seconds), sample 10 names, and write the loss curve (PNG + JSON)."""

import dataclasses
import json
from pathlib import Path

from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.data import load_data
from jaxsys.gpt.sample import sample_texts
from jaxsys.gpt.train import TrainConfig, train
from jaxsys.train.io import atomic_write_json, save_figure
from jaxsys.train.metrics import read_metrics

FULL = dict(n_embd=64, n_head=4, n_layer=2, steps=2000, batch_size=64, eval_every=250)
QUICK = dict(n_embd=16, n_head=4, n_layer=1, steps=60, batch_size=16, eval_every=30)


def run_stage(run_dir: Path, quick: bool) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    k = QUICK if quick else FULL
    data = load_data(None, "docs", block_size=16, seed=0)
    cfg = GPTConfig(
        vocab_size=data.tokenizer.vocab_size,
        n_embd=k["n_embd"],
        n_head=k["n_head"],
        n_layer=k["n_layer"],
        block_size=data.train.seq_len,
    )
    tcfg = TrainConfig(
        steps=k["steps"],
        batch_size=k["batch_size"],
        eval_every=k["eval_every"],
        eval_batches=10 if quick else 50,
        log_every=10,
        seed=0,
    )
    res = train(data, cfg, tcfg, run_dir / "model", log=None, progress=not quick)
    names = sample_texts(res.state.params, cfg, data.tokenizer, num=10, temperature=0.5, seed=42)
    recs = read_metrics(run_dir / "model" / "metrics.jsonl")
    curve = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    val = [(h["step"], h["val_loss"]) for h in res.history]
    _plot(curve, val, run_dir / "loss.png")
    s = res.summary
    atomic_write_json(
        run_dir / "gpt.json",
        {
            "model": dataclasses.asdict(cfg),
            "train": dataclasses.asdict(tcfg),
            "data": data.info,
            "summary": s,
            "train_curve": curve,
            "val_curve": val,
            "samples": names,
            "model_dir": str(run_dir / "model"),
        },
    )
    return {
        "train_loss": round(s["train_loss"], 4),
        "val_loss": round(s["val_loss"], 4),
        "tokens_per_s": round(s["tokens_per_s"]),
        "steps": s["steps"],
        "names": " ".join(names),
    }


def _plot(curve, val, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        ax.plot(*zip(*curve), label="train (mean over 10 steps)", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_title("GPT on names.txt")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    print(
        json.dumps(
            run_stage(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpt-tour"), quick="--quick" in sys.argv),
            indent=1,
        )
    )
