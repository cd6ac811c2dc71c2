"""`jaxsys autodecoder {train,view,infer}`."""

import dataclasses
import json
from pathlib import Path

from jaxsys.errors import ConfigError
from jaxsys.train.cli_args import add_train_args, positive_int


def _add_common(p) -> None:
    p.add_argument(
        "--schedule",
        choices=["strict", "microbatch", "batched"],
        default="microbatch",
        help="learning rule (default microbatch, the reference's batched rule)",
    )
    p.add_argument("--shapes", default="circle,box,triangle", help="comma-separated registry names")
    p.add_argument("--batch", type=positive_int("--batch"), default=256, help="samples per micro-batch")
    p.add_argument("--latent-dim", type=positive_int("--latent-dim"), default=16)
    p.add_argument("--freqs", type=positive_int("--freqs", allow_zero=True), default=6, help="Fourier frequencies K")
    p.add_argument("--hidden", default="64,64,64", help="hidden widths, comma-separated")
    p.add_argument("--lr-w", type=float, default=3e-4)
    p.add_argument("--lr-z", type=float, default=1e-3)
    p.add_argument("--lambda-z", type=float, default=1e-4)
    p.add_argument("--lambda-w", type=float, default=1e-6, help="weight decay (0 disables)")
    p.add_argument("--batched-lr", type=float, default=1e-3, help="Adam lr of --schedule batched")
    p.add_argument(
        "--chunk",
        type=positive_int("--chunk"),
        default=32,
        help="microbatch GEMM block (1 = literal per-sample scan; same result)",
    )
    p.add_argument("--boundary-frac", type=float, default=0.6)
    p.add_argument("--corner-frac", type=float, default=0.15)
    p.add_argument("--band", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.1)


def config_from_args(args):
    from jaxsys.autodecoder.model import ModelConfig
    from jaxsys.autodecoder.sampler import SamplerConfig
    from jaxsys.autodecoder.schedules import ScheduleConfig
    from jaxsys.autodecoder.train import TrainConfig

    try:
        hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    except ValueError:
        raise ConfigError(f"--hidden must be comma-separated integers, got {args.hidden!r}") from None
    shapes = tuple(s.strip() for s in args.shapes.split(",") if s.strip())
    cfg = TrainConfig(
        model=ModelConfig(latent_dim=args.latent_dim, num_freqs=args.freqs, hidden=hidden, dtype=args.dtype),
        sched=ScheduleConfig(
            name=args.schedule,
            lr_w=args.lr_w,
            lr_z=args.lr_z,
            lambda_z=args.lambda_z,
            lambda_w=args.lambda_w,
            batched_lr=args.batched_lr,
            chunk=args.chunk,
        ),
        sampler=SamplerConfig(
            shapes=shapes,
            boundary_frac=args.boundary_frac,
            corner_frac=args.corner_frac,
            band=args.band,
            beta=args.beta,
        ),
        batch_size=args.batch,
        seed=args.seed,
        **{
            k: getattr(args, k)
            for k in ("steps", "steps_per_call", "num_seeds", "eval_res", "checkpoint_every")
            if hasattr(args, k)
        },
    )
    return cfg


def _train(args) -> int:
    import jax

    from jaxsys.autodecoder.train import train
    from jaxsys.train.cli_args import run_dir_from_args
    from jaxsys.train.distributed import mesh_from_args

    if args.fsdp:
        raise ConfigError("--fsdp does not apply to the auto-decoder: its seeds share no parameters to shard")
    mesh = mesh_from_args(args)  # joins a multi-process run when asked; before any JAX work
    if not args.mesh and jax.process_count() == 1:
        mesh = None  # train's default: the seeds over as many devices as divide --num-seeds
    cfg = config_from_args(args)
    if args.steps_per_call > cfg.steps:
        cfg = dataclasses.replace(cfg, steps_per_call=cfg.steps)
    run_dir = run_dir_from_args(args, "autodecoder")
    print(f"run directory: {run_dir}")
    summary = train(cfg, run_dir, mesh=mesh, progress=not args.no_progress, infer_shape=args.infer_shape or None)
    print(
        json.dumps(
            {k: summary[k] for k in ("schedule", "samples", "samples_per_s", "iou", "contour_abs_sdf") if k in summary},
            indent=1,
        )
    )
    if "inferred" in summary:
        print("inferred:", json.dumps(summary["inferred"]))
    print(f"wrote {run_dir}/summary.json, metrics.jsonl, ckpt/, " + ", ".join(summary.get("pngs", [])))
    return 0


def _view(args) -> int:
    import jax
    import matplotlib

    from jaxsys.autodecoder.viewer import Viewer

    if args.run_dir:
        from jaxsys.autodecoder.train import init_state, load_run

        cfg, params, Z = load_run(Path(args.run_dir))
        cfg = dataclasses.replace(cfg, num_seeds=1)
        key = jax.random.key(cfg.seed)
        state = init_state(key, cfg).replace(params=params, latents=Z)
    else:
        cfg = config_from_args(args)
        key = jax.random.key(cfg.seed)
        state = None
    if args.save:
        matplotlib.use("Agg")
    v = Viewer(cfg, key, state=state, burst_steps=args.burst, res=args.res, tau=args.tau)
    for key in args.keys:
        print(v.handle_key(key))
    v.connect()
    if args.save:
        from jaxsys.train.io import save_figure

        v.refresh()
        save_figure(v.fig, args.save, dpi=80)
        print(f"wrote {args.save}")
        return 0
    import matplotlib.pyplot as plt

    print("keys: T train burst, B/b double/halve micro-batch, M mask/heatmap, S soft/hard, [ ] tau, R refresh")
    plt.show()
    return 0


def _infer(args) -> int:
    from jaxsys.autodecoder import infer, plots, recon
    from jaxsys.autodecoder.train import load_run

    cfg, params, Z = load_run(Path(args.run_dir))
    icfg = infer.InferConfig(steps=args.steps, lr=args.lr, seed=args.seed, lambda_z=cfg.sched.lambda_z)
    z, losses = infer.infer_latent(params, cfg.model, args.shape, icfg, cfg.sampler)
    m = recon.shape_metrics(params, z, cfg.model, args.shape, cfg.eval_res)
    out = Path(args.run_dir) / f"inferred-{args.shape}.png"
    plots.plot_inferred(params, z, args.shape, cfg.model, cfg.sampler.beta, cfg.eval_res, out, m["iou"])
    print(json.dumps({"shape": args.shape, **m, "final_loss": float(losses[-1])}))
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("autodecoder", help="2D SDF auto-decoder (per-sample latent learning)")
    gsub = p.add_subparsers(dest="autodecoder_cmd")

    t = gsub.add_parser("train", help="train on the analytic shapes; PNGs, metrics, checkpoints")
    _add_common(t)
    # --steps counts micro-batches; --mesh spreads the seeds over devices, e.g. data=4 with
    # --num-seeds a multiple of 4 (default: as many devices as divide --num-seeds)
    add_train_args(t, steps=120_000, checkpoint_every=10_000, dtypes=("float32", "float64"))
    t.add_argument(
        "--steps-per-call",
        type=positive_int("--steps-per-call"),
        default=500,
        help="micro-batches per jitted call",
    )
    t.add_argument(
        "--num-seeds", type=positive_int("--num-seeds"), default=1, help="independent seeds trained with vmap"
    )
    t.add_argument("--eval-res", type=positive_int("--eval-res"), default=128, help="resolution of the IoU evaluation")
    t.add_argument(
        "--infer-shape", default="rounded_box", help="after training, infer the latent of this new shape ('' to skip)"
    )
    t.set_defaults(func=_train)

    v = gsub.add_parser("view", help="interactive viewer (T/B/b/M/S/[/]/R keys)")
    _add_common(v)
    v.add_argument("--seed", type=int, default=0, help="random seed of a fresh model")
    v.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    v.add_argument("--run-dir", default="", help="start from this run directory's checkpoint")
    v.add_argument("--burst", type=int, default=200, help="micro-batches per T press")
    v.add_argument("--res", type=int, default=96)
    v.add_argument("--tau", type=float, default=0.02)
    v.add_argument("--keys", default="", help="keys to apply before showing, e.g. 'TTM'")
    v.add_argument("--save", default="", help="save the figure to this PNG and exit (headless)")
    v.set_defaults(func=_view)

    i = gsub.add_parser("infer", help="infer the latent of a new shape with the decoder frozen")
    i.add_argument("--run-dir", required=True, help="trained run directory")
    i.add_argument("--shape", default="rounded_box", help="registered shape name")
    i.add_argument("--steps", type=int, default=600)
    i.add_argument("--lr", type=float, default=5e-3)
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(func=_infer)
