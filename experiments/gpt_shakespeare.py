"""Character-level tiny Shakespeare: validation loss vs training wall time, jaxsys (hand engine)
and the PyTorch implementation trained the same way in the same run.

Recipe (nanoGPT's CPU recipe, on the microgpt architecture): 4 layers, 4 heads, 128 dims, block 64,
batch 12, 2000 iterations, Adam lr 1e-3 (b1 0.9, b2 0.99), 100 warm-up steps then cosine decay to
1e-4, global-norm clip 1.0, no dropout, no weight decay. Both start from the same initial weights and
see the same batches (jaxsys.gpt.data: 90/10 split by position, windows at offsets drawn from
(seed, step)). The two are trained in alternating segments of `--segment` steps so that load drift
on a shared machine hits both alike; the clock counts training steps only (evaluation excluded).

    flock /tmp/jaxsys-heavy.lock python experiments/gpt_shakespeare.py
    flock /tmp/jaxsys-heavy.lock python experiments/gpt_shakespeare.py --long-minutes 8 --no-torch

Writes runs/bench/gpt_shakespeare[_long].json or --out (and a PNG under runs/).
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--segment", type=int, default=250, help="steps per segment (and eval cadence)")
    ap.add_argument("--eval-batches", type=int, default=20, help="val batches per periodic eval")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: probe 1 and all cores, keep the faster)",
    )
    ap.add_argument(
        "--long-minutes",
        type=float,
        default=0.0,
        help="instead: train jaxsys only for about this many minutes (steps from a "
        "timing probe), cosine schedule over those steps",
    )
    ap.add_argument(
        "--matmul-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="jaxsys parameter-matmul operands (bfloat16: float32 accumulation and "
        "master weights); torch stays float32",
    )
    ap.add_argument(
        "--schedule",
        choices=["cosine", "linear"],
        default="cosine",
        help="cosine: warm-up then cosine to --min-lr; linear: lr (1 - step/steps)",
    )
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.data import Batch, load_data
    from jaxsys.gpt.train import TrainConfig, evaluate, init_state, train_step

    data = load_data(args.data, "corpus", args.block, seed=args.seed)
    tok = data.tokenizer
    cfg = GPTConfig(
        vocab_size=tok.vocab_size, n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, block_size=args.block
    )
    B = args.batch
    long_run = args.long_minutes > 0
    steps = args.steps
    tcfg = TrainConfig(
        steps=steps,
        batch_size=B,
        lr=args.lr,
        beta1=0.9,
        beta2=0.99,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        min_lr=args.min_lr,
        grad_clip=1.0,
        seed=args.seed,
        matmul_dtype=args.matmul_dtype,
    )
    periodic = [Batch(*(jnp.asarray(a) for a in b)) for b in data.val.eval_batches(B, args.eval_batches)]
    final = [Batch(*(jnp.asarray(a) for a in b)) for b in data.val.eval_batches(B)]
    print(
        f"data {data.info}; model {cfg}; {len(final)} final val batches ({len(final) * B * args.block} tokens)",
        flush=True,
    )

    def jbatch(step):
        b = data.train.batch(step, B, tcfg.seed)
        return b.tokens, b.targets, b.mask

    if long_run:  # probe the step time, then size the run
        probe = init_state(jax.random.key(tcfg.seed), tcfg.step_config(cfg))
        probe, loss = train_step(probe, *jbatch(0), cfg=tcfg.step_config(cfg))
        jax.block_until_ready(loss)
        t0 = time.perf_counter()
        for s in range(1, 51):
            probe, loss = train_step(probe, *jbatch(s), cfg=tcfg.step_config(cfg))
        jax.block_until_ready(loss)
        per = (time.perf_counter() - t0) / 50
        steps = int(args.long_minutes * 60 / per)
        steps -= steps % args.segment
        tcfg = dataclasses.replace(tcfg, steps=steps)
        args.no_torch = True
        del probe
        print(f"long run: {per * 1e3:.1f} ms/step -> {steps} steps", flush=True)

    step_cfg = tcfg.step_config(cfg)
    state = init_state(jax.random.key(tcfg.seed), step_cfg)
    init_np = {k: np.asarray(v) for k, v in state.params.items()}
    curves = {"jaxsys_hand": [], "torch_eager_sdpa": []}
    clock = {"jaxsys_hand": 0.0, "torch_eager_sdpa": 0.0}

    trainer = None
    if not args.no_torch:
        import torch
        from torch_gpt import TorchGPT, TorchTrainer

        if not args.torch_threads:  # on a shared machine 2 OpenMP threads can be 10x slower
            probe = TorchTrainer(
                TorchGPT(cfg.vocab_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, params=init_np),
                args.lr,
                steps=steps,
            )
            b = data.train.batch(0, B, 0)
            x, y = torch.from_numpy(b.tokens).long(), torch.from_numpy(b.targets).long()
            times = {}
            for nt in (1, os.cpu_count(), 1, os.cpu_count()):
                torch.set_num_threads(nt)
                probe.step(x, y)
                t0 = time.perf_counter()
                for _ in range(5):
                    probe.step(x, y)
                times[nt] = min(times.get(nt, 1e9), time.perf_counter() - t0)
            args.torch_threads = min(times, key=times.get)
            print(f"torch threads probe (s per 5 steps): {times} -> {args.torch_threads}")
            del probe
        torch.set_num_threads(args.torch_threads)
        torch.manual_seed(args.seed)
        tm = TorchGPT(cfg.vocab_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, attn="sdpa", params=init_np)
        trainer = TorchTrainer(
            tm,
            args.lr,
            betas=(0.9, 0.99),
            eps=1e-8,
            schedule=args.schedule,
            steps=steps,
            warmup=args.warmup,
            min_lr=args.min_lr,
            grad_clip=1.0,
        )
        np_final = [tuple(np.asarray(a) for a in b) for b in final]
        np_periodic = [tuple(np.asarray(a) for a in b) for b in periodic]

    # compile outside the clock (reported separately)
    t0 = time.perf_counter()
    warm = init_state(jax.random.key(tcfg.seed), step_cfg)
    warm, loss = train_step(warm, *jbatch(0), cfg=step_cfg)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    evaluate(warm.params, periodic[:1], cfg)
    del warm
    curves["jaxsys_hand"].append({"step": 0, "seconds": 0.0, "val_loss": evaluate(state.params, periodic, cfg)})
    if trainer is not None:
        curves["torch_eager_sdpa"].append({"step": 0, "seconds": 0.0, "val_loss": trainer.evaluate(np_periodic)})
    step = 0
    while step < steps:
        seg = min(args.segment, steps - step)
        t0 = time.perf_counter()
        for s in range(step, step + seg):
            state, loss = train_step(state, *jbatch(s), cfg=step_cfg)
        jax.block_until_ready(loss)
        clock["jaxsys_hand"] += time.perf_counter() - t0
        jl = float(loss)
        if trainer is not None:
            t0 = time.perf_counter()
            for s in range(step, step + seg):
                b = data.train.batch(s, B, tcfg.seed)
                tl = trainer.step(torch.from_numpy(b.tokens).long(), torch.from_numpy(b.targets).long())
            clock["torch_eager_sdpa"] += time.perf_counter() - t0
        step += seg
        ev = final if step == steps else periodic
        v = evaluate(state.params, ev, cfg)
        curves["jaxsys_hand"].append({"step": step, "seconds": clock["jaxsys_hand"], "train_loss": jl, "val_loss": v})
        msg = f"step {step}: jaxsys {clock['jaxsys_hand']:.1f}s val {v:.4f}"
        if trainer is not None:
            tv = trainer.evaluate(np_final if step == steps else np_periodic)
            curves["torch_eager_sdpa"].append(
                {"step": step, "seconds": clock["torch_eager_sdpa"], "train_loss": float(tl), "val_loss": tv}
            )
            msg += f" | torch {clock['torch_eager_sdpa']:.1f}s val {tv:.4f}"
        print(msg + f"  (load {os.getloadavg()[0]:.1f})", flush=True)

    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPU cores",
        "command": "python experiments/gpt_shakespeare.py " + " ".join(argv or sys.argv[1:]),
        "model": dataclasses.asdict(cfg),
        "train": dataclasses.asdict(tcfg),
        "data": data.info,
        "final_val_tokens": len(final) * B * args.block,
        "jax_compile_seconds": compile_s,
        "torch_threads": args.torch_threads,
        "load_avg_end": os.getloadavg()[0],
        "note": "seconds = training steps only (eval excluded, compile excluded); the last "
        "point's val_loss uses the full validation split, earlier points "
        f"{args.eval_batches} batches",
        "curves": {k: v for k, v in curves.items() if v},
    }
    for k, c in res["curves"].items():
        hit = next((p for p in c if p["val_loss"] <= 1.88), None)
        res[f"{k}_final_val_loss"] = c[-1]["val_loss"]
        res[f"{k}_train_seconds"] = c[-1]["seconds"]
        res[f"{k}_seconds_to_1.88"] = hit["seconds"] if hit else None
    if trainer is not None:
        res["speedup_jax_vs_torch"] = clock["torch_eager_sdpa"] / clock["jaxsys_hand"]
    # 10 samples from the Shakespeare model, for a look
    from jaxsys.gpt.inference import InferenceModel

    im = InferenceModel({k: np.asarray(v, np.float64) for k, v in state.params.items()}, cfg, tok)
    ids = im.generate_from_prompt(tok.encode("\n"), args.block - 1, temperature=0.8, seed=0, stop_ids=[])
    res["sample"] = "\n" + tok.decode(ids)
    out = Path(
        args.out or ROOT / "runs" / "bench" / ("gpt_shakespeare_long.json" if long_run else "gpt_shakespeare.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, out)
    _plot(res, ROOT / "runs" / (out.stem + ".png"))
    print(json.dumps({k: v for k, v in res.items() if k not in ("curves", "data", "model", "train")}, indent=1))
    return 0


def _plot(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, c in res["curves"].items():
        ax.plot([p["seconds"] for p in c], [p["val_loss"] for p in c], "o-", label=k)
    ax.axhline(1.88, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation loss")
    ax.set_ylim(top=3.0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
