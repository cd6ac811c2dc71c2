"""`jaxsys gpt chat` and `jaxsys gpt serve`; gpt's cli.py calls `register_serving(gsub)`."""

import ipaddress
import sys


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
    from jaxsys.gpt.serve import ServeConfig, serve

    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        raise ConfigError(f"--host must be an IP address or 'localhost', got {args.host!r}") from None
    if not loopback:
        print(
            f"warning: serving on {args.host}, reachable beyond this machine; there is no authentication",
            file=sys.stderr,
        )
    params, cfg, tok = _load(args.model)
    scfg = ServeConfig(
        model_name=args.name,
        max_batch=args.max_batch,
        chunk_steps=args.chunk_steps,
        max_num_samples=args.max_num_samples,
        max_tokens_limit=args.max_tokens_limit,
        max_body_bytes=args.max_body_bytes,
    )
    print(
        f"serving {args.model} as {args.name!r} on http://{args.host}:{args.port} "
        f"(chat={'yes' if tok.chat else 'no'}, block_size={cfg.block_size}, "
        f"max_batch={args.max_batch})",
        file=sys.stderr,
    )
    serve(params, cfg, tok, args.host, args.port, scfg)
    return 0


def register_serving(gsub) -> None:
    p = gsub.add_parser("chat", help="chat with a chat-mode model in the terminal (REPL)")
    p.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    p.add_argument("--temperature", type=float, default=0.5, help="0 = greedy")
    p.add_argument("--seed", type=int, default=42, help="seed of the first turn (turn k uses seed+k)")
    p.add_argument("--max-tokens", type=int, default=None, help="reply length limit (tokens)")
    p.add_argument("--history", default="~/.jaxsys_gpt_chat_history", help="readline history file ('' to disable)")
    p.set_defaults(func=_chat)

    p = gsub.add_parser("serve", help="HTTP API: /microgpt/v1/*, OpenAI /v1/chat/completions")
    p.add_argument("--model", required=True, help="folder with weights.json + meta.json")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="microgpt", help="model id reported to clients")
    p.add_argument("--max-batch", type=int, default=16, help="rows decoded together per step")
    p.add_argument("--chunk-steps", type=int, default=4, help="decode steps between batch updates")
    p.add_argument("--max-num-samples", type=int, default=50)
    p.add_argument("--max-tokens-limit", type=int, default=None, help="cap on max_tokens")
    p.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    p.set_defaults(func=_serve)
