"""`jaxsys mlp train` and `jaxsys mlp gradcheck`."""

import json

from jaxsys.errors import ConfigError
from jaxsys.train.cli_args import add_train_args, positive_int


def _int_list(s: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--hidden must be comma-separated integers like 64,64, got {s!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"--hidden needs at least one positive width, got {s!r}")
    return vals


def _train(args) -> int:
    from jaxsys.mlp.train import TrainConfig, train
    from jaxsys.train.cli_args import run_dir_from_args
    from jaxsys.train.distributed import mesh_from_args

    mesh = mesh_from_args(args)  # joins a multi-process run first; None: the loop's default mesh
    cfg = TrainConfig(
        task=args.task,
        hidden=_int_list(args.hidden),
        activation=args.activation,
        steps=args.steps,
        batch=args.batch,
        optimizer=args.optimizer,
        grad=args.grad,
        learning_rate=args.lr,
        matmul=args.matmul,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
    )
    run_dir = run_dir_from_args(args, f"mlp-{args.task}")
    print(f"run dir: {run_dir}")
    s = train(cfg, run_dir, mesh=mesh, fsdp=args.fsdp, log=lambda m: None, progress=not args.no_progress)
    if s["resumed_from"]:
        print(f"resumed from step {s['resumed_from']}")
    print(f"mesh {s['mesh']} on {s['processes']} process(es)")
    if args.task == "classify":
        print(
            f"test accuracy {s['test_accuracy']:.4f} (train {s['train_accuracy']:.4f}) after "
            f"{s['steps']} steps on {s['data']}"
        )
    else:
        print(
            f"test RMSE {s['test_rmse']:.2f} (target units), test loss {s['test_loss']:.4f} after "
            f"{s['steps']} steps on {s['data']}"
        )
    return 0


def _gradcheck(args) -> int:
    from jaxsys.mlp.checks import check_mlp_gradients

    for task in ["classify", "regress"] if args.task == "both" else [args.task]:
        r = check_mlp_gradients(task, hidden=_int_list(args.hidden), batch=args.batch)
        print(json.dumps(r))
    print("gradients ok")
    return 0


def register(sub) -> None:
    p = sub.add_parser("mlp", help="batched MLP with hand-derived backward and Adam")
    gsub = p.add_subparsers(dest="mlp_cmd")

    t = gsub.add_parser("train", help="train on digits (classify) or diabetes (regress)")
    t.add_argument("--task", choices=["classify", "regress"], default="classify")
    t.add_argument("--batch", type=positive_int("--batch"), default=64, help="minibatch size")
    t.add_argument("--hidden", default="64,64", help="hidden widths, comma-separated")
    t.add_argument("--activation", default="relu", help="hidden activation (relu, tanh)")
    t.add_argument("--optimizer", choices=["hand", "optax"], default="hand", help="Adam implementation")
    t.add_argument(
        "--grad", choices=["hand", "autodiff"], default="hand", help="hand-derived backward or jax.value_and_grad"
    )
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument(
        "--matmul", choices=["xla", "pallas"], default="xla", help="pallas: tiled kernel (interpreted on CPU, slow)"
    )
    t.add_argument("--log-every", type=positive_int("--log-every"), default=50, help="steps between metrics records")
    t.add_argument("--eval-every", type=positive_int("--eval-every"), default=500, help="steps between test evals")
    # --steps --run-dir --seed --checkpoint-every --no-progress --mesh --fsdp --coordinator ...
    add_train_args(t, steps=3000, checkpoint_every=1000)
    t.set_defaults(func=_train)

    g = gsub.add_parser("gradcheck", help="hand gradients vs jax.grad and finite differences (float64)")
    g.add_argument("--task", choices=["classify", "regress", "both"], default="both")
    g.add_argument("--hidden", default="32,32")
    g.add_argument("--batch", type=int, default=32)
    g.set_defaults(func=_gradcheck)
