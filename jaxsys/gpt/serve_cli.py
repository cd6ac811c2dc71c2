"""`jaxsys gpt chat` and `jaxsys gpt serve`; gpt's cli.py calls `register_serving(gsub)`."""

import argparse
import ipaddress
import math
import sys

from jaxsys.train.cli_args import positive_int


def nonnegative_float(name: str):
    """An argparse `type=` for a finite number >= 0 (a temperature: 0 is greedy)."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not (math.isfinite(v) and v >= 0):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0, got {s}")
        return v

    return parse


def port_number(s: str) -> int:
    """An argparse `type=` for a TCP port, 1..65535 (never taken modulo 65536)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer, got {s!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be in 1..65535, got {v}")
    return v


def _load(model_dir):
    from jaxsys.gpt.weights_io import load_model

    return load_model(model_dir)


def _chat(args) -> int:
    from jaxsys.gpt.chat import run_repl

    params, cfg, tok = _load(args.model)
    return run_repl(
        params,
        cfg,
        tok,
        temperature=args.temperature,
        seed=args.seed,
        max_new_tokens=args.max_tokens,
        history_file=args.history or None,
    )


def _serve(args) -> int:
    from jaxsys.errors import ConfigError
    from jaxsys.gpt.serve import ServeConfig, create_app, serve

    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        raise ConfigError(f"--host must be an IP address or 'localhost', got {args.host!r}") from None
    if not loopback:
        print(
            f"warning: serving on {args.host}, reachable beyond this machine; there is no authentication",
            file=sys.stderr,
        )
    scfg = ServeConfig(
        model_name=args.name,
        max_batch=args.max_batch,
        chunk_steps=args.chunk_steps,
        max_num_samples=args.max_num_samples,
        max_tokens_limit=args.max_tokens_limit,
        max_body_bytes=args.max_body_bytes,
        read_timeout_s=args.read_timeout,
    )
    params, cfg, tok = _load(args.model)
    app = create_app(params, cfg, tok, scfg)  # warm-up compiles here, before "serving" is printed
    print(
        f"serving {args.model} as {args.name!r} on http://{args.host}:{args.port} "
        f"(chat={'yes' if tok.chat else 'no'}, block_size={cfg.block_size}, "
        f"max_batch={args.max_batch})",
        file=sys.stderr,
    )
    serve(app, args.host, args.port)
    return 0


def register_serving(gsub) -> None:
    p = gsub.add_parser("chat", help="chat with a chat-mode model in the terminal (REPL)")
    p.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    p.add_argument("--temperature", type=nonnegative_float("--temperature"), default=0.5, help="0 = greedy")
    p.add_argument("--seed", type=positive_int("--seed", allow_zero=True), default=42, help="turn k uses seed + k")
    p.add_argument("--max-tokens", type=positive_int("--max-tokens"), default=None, help="reply length limit (tokens)")
    p.add_argument("--history", default="~/.jaxsys_gpt_chat_history", help="readline history file ('' to disable)")
    p.set_defaults(func=_chat)

    p = gsub.add_parser("serve", help="HTTP API and chat page: /, /microgpt/v1/*, OpenAI /v1/chat/completions")
    p.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port, 1..65535")
    p.add_argument("--name", default="microgpt", help="model id reported to clients")
    p.add_argument("--max-batch", type=positive_int("--max-batch"), default=16, help="rows decoded together per step")
    p.add_argument(
        "--chunk-steps", type=positive_int("--chunk-steps"), default=4, help="decode steps between batch updates"
    )
    p.add_argument("--max-num-samples", type=positive_int("--max-num-samples"), default=50)
    p.add_argument(
        "--max-tokens-limit", type=positive_int("--max-tokens-limit"), default=None, help="cap on max_tokens"
    )
    p.add_argument("--max-body-bytes", type=positive_int("--max-body-bytes"), default=256 * 1024)
    p.add_argument(
        "--read-timeout",
        type=nonnegative_float("--read-timeout"),
        default=10.0,
        help="seconds a client has to send its request body (then 408)",
    )
    p.set_defaults(func=_serve)
