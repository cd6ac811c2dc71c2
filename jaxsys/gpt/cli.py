"""`jaxsys gpt train` and `jaxsys gpt sample` (+ `chat` and `serve` from serve_cli when present).

jaxsys gpt train --steps 1000 --run-dir runs/names         # packaged names (the default data)
jaxsys gpt train --data shakespeare --block-size 64 ...    # packaged tiny Shakespeare, corpus mode
jaxsys gpt train --data chat --chat-categories greetings,conversations --run-dir runs/chat
jaxsys gpt train --data my.txt --mode docs                 # your own file
jaxsys gpt train --steps 2000 --run-dir runs/names         # continues from its last checkpoint
jaxsys gpt sample --model runs/names --num 10 --temperature 0.5 --seed 42
"""

import importlib
import importlib.util
import sys

from jaxsys.errors import ConfigError
from jaxsys.train.cli_args import add_train_args, positive_int

AUTO_CORPUS_BLOCK = 128  # default block_size of corpus mode (docs/chat: the longest sequence, <= 512)


def _train(args) -> int:
    if args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    from jaxsys.gpt.config import GPTConfig
    from jaxsys.gpt.data import load_data, resolve_data
    from jaxsys.gpt.train import TrainConfig, train
    from jaxsys.train.cli_args import run_dir_from_args
    from jaxsys.train.distributed import mesh_from_args

    mesh = mesh_from_args(args)  # joins a multi-process run first; None: the loop's default mesh

    _, mode = resolve_data(args.data, args.mode)
    cats = [c for c in args.chat_categories.split(",") if c.strip()] if args.chat_categories else None
    if cats and mode != "chat":
        raise ConfigError("--chat-categories applies to --mode chat only")
    block = args.block_size
    tcfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        min_lr=args.min_lr,
        grad_clip=args.grad_clip,
        engine=args.engine,
        optimizer=args.optimizer,
        dtype=args.dtype,
        seed=args.seed,
        matmul_dtype=args.matmul_dtype,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
    )
    data = load_data(
        args.data,
        mode,
        block or (AUTO_CORPUS_BLOCK if mode == "corpus" else 512),
        seed=args.seed,
        val_fraction=args.val_fraction,
        chat_categories=cats,
    )
    if block is None:  # fit the model to the data: no unused wpe rows
        block = data.train.seq_len if mode != "corpus" else AUTO_CORPUS_BLOCK
        if data.val is not None:
            block = max(block, data.val.seq_len)
    cfg = GPTConfig(
        vocab_size=data.tokenizer.vocab_size,
        n_embd=args.n_embd,
        n_head=args.n_head,
        n_layer=args.n_layer,
        block_size=block,
    )
    out = run_dir_from_args(args, "gpt")
    print(f"data: {data.info}", file=sys.stderr)
    print(
        f"model: {cfg}, {tcfg.engine} engine, {tcfg.dtype} (matmuls {tcfg.matmul_dtype}); run dir: {out}",
        file=sys.stderr,
    )
    res = train(
        data,
        cfg,
        tcfg,
        out,
        mesh=mesh,
        fsdp=args.fsdp,
        log=lambda s: print(s, file=sys.stderr),
        progress=not args.no_progress,
    )
    s = res.summary
    val = f"{s['val_loss']:.4f}" if s["val_loss"] is not None else "n/a"
    print(f"train_loss {s['train_loss']:.4f}  val_loss {val}  tokens/s {s['tokens_per_s']:.0f}  model {out}")
    return 0


def _sample(args) -> int:
    from jaxsys.gpt.sample import sample_texts
    from jaxsys.gpt.weights_io import load_model

    params, cfg, tok = load_model(args.model)
    for text in sample_texts(
        params,
        cfg,
        tok,
        num=args.num,
        temperature=args.temperature,
        seed=args.seed,
        prompt=args.prompt,
        max_new_tokens=args.max_tokens,
    ):
        print(text)
    return 0


def _run_compressed(args) -> int:
    from jaxsys.gpt.compressed import run_report

    cache = None if args.cache_layers < 0 else args.cache_layers
    r = run_report(
        args.model,
        cache,
        prompt=args.prompt,
        max_new_tokens=args.max_tokens,
        mode=args.codec_mode,
        prefetch=not args.no_prefetch,
        fused=args.fused,
    )
    for k, v in r.items():
        print(f"{k:>26}: {v:.4g}" if isinstance(v, float) else f"{k:>26}: {v}")
    return 0 if r["identical_tokens"] else 1


def register(sub) -> None:
    p = sub.add_parser("gpt", help="microgpt: train, sample (chat, serve) a character-level GPT")
    gsub = p.add_subparsers(dest="gpt_cmd")

    t = gsub.add_parser("train", help="train a GPT on documents, a corpus or chat pairs")
    t.add_argument(
        "--data",
        default=None,
        help="packaged data (names, chat, shakespeare) or a UTF-8 text file (default: the packaged names)",
    )
    t.add_argument(
        "--mode",
        choices=["docs", "corpus", "chat"],
        default=None,
        help="docs: one document per line; corpus: continuous text; chat: TSV category<TAB>prompt<TAB>response "
        "(default: the packaged data's mode; docs for a file)",
    )
    t.add_argument(
        "--chat-categories",
        default="",
        help="comma-separated categories to keep in chat mode, e.g. greetings,conversations",
    )
    t.add_argument("--n-embd", type=positive_int("--n-embd"), default=64)
    t.add_argument("--n-head", type=positive_int("--n-head"), default=4)
    t.add_argument("--n-layer", type=positive_int("--n-layer"), default=2)
    t.add_argument(
        "--block-size",
        type=positive_int("--block-size"),
        default=None,
        help=f"context length (default: the longest document/conversation, at most 512; corpus: {AUTO_CORPUS_BLOCK})",
    )
    t.add_argument("--batch", type=positive_int("--batch"), default=32, help="sequences per step")
    t.add_argument("--lr", type=float, default=0.01, help="peak Adam learning rate")
    t.add_argument("--schedule", choices=["linear", "cosine", "constant"], default="linear")
    t.add_argument(
        "--warmup", type=positive_int("--warmup", allow_zero=True), default=0, help="warm-up steps (cosine schedule)"
    )
    t.add_argument("--min-lr", type=float, default=0.0, help="final lr (cosine schedule)")
    t.add_argument("--grad-clip", type=float, default=0.0, help="global-norm clip (0: off)")
    t.add_argument(
        "--engine",
        choices=["hand", "autodiff"],
        default="hand",
        help="hand-derived backward or jax.grad of the same forward",
    )
    t.add_argument(
        "--optimizer",
        choices=["optax", "hand"],
        default="optax",
        help="optax.adam or the hand-written Adam of jaxsys.nn.optim (same maths)",
    )
    t.add_argument(
        "--matmul-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="operand dtype of the parameter matmuls (bfloat16: float32 accumulation, float32 master weights)",
    )
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument(
        "--eval-every",
        type=positive_int("--eval-every", allow_zero=True),
        default=100,
        help="steps between validation losses (0: only at the end)",
    )
    t.add_argument("--eval-batches", type=positive_int("--eval-batches"), default=20)
    t.add_argument("--log-every", type=positive_int("--log-every"), default=10)
    # --steps --run-dir --seed (init, split, data order) --checkpoint-every --no-progress --dtype --mesh ...
    add_train_args(t, steps=1000, checkpoint_every=200, dtypes=("float32", "float64"))
    t.set_defaults(func=_train)

    from jaxsys.gpt.serve_cli import nonnegative_float

    s = gsub.add_parser("sample", help="sample documents (e.g. names) from a trained model")
    s.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    s.add_argument("--num", type=positive_int("--num", allow_zero=True), default=10)
    s.add_argument("--temperature", type=nonnegative_float("--temperature"), default=0.5, help="0 = greedy")
    s.add_argument("--seed", type=positive_int("--seed", allow_zero=True), default=42, help="sample i uses seed + i")
    s.add_argument("--prompt", default="", help="plain model: text to continue; chat: the user turn")
    s.add_argument(
        "--max-tokens",
        type=positive_int("--max-tokens"),
        default=None,
        help="new tokens per sample (default: up to block_size)",
    )
    s.set_defaults(func=_sample)

    if importlib.util.find_spec("jaxsys.gpt.serve_cli") is not None:
        importlib.import_module("jaxsys.gpt.serve_cli").register_serving(gsub)

    r = gsub.add_parser("run-compressed", help="run a trained GPT from codec-compressed weights and account for it")
    r.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    r.add_argument("--cache-layers", type=int, default=1, help="decoded groups kept (-1: all)")
    r.add_argument("--codec-mode", default="int8", choices=["int8", "lossless"], help="how the weights are stored")
    r.add_argument("--prompt", default="")
    r.add_argument("--max-tokens", type=int, default=32)
    r.add_argument("--no-prefetch", action="store_true")
    r.add_argument("--fused", action="store_true", help="fuse a layer's decode with its compute")
    r.set_defaults(func=_run_compressed)
