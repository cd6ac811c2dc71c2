"""Chat prompts in the training format, and the `jaxsys gpt chat` REPL.

Training sees conversations as [BOS, (role, text..., end_turn)*, BOS]; a reply is asked for with
[BOS, (role, text..., end_turn)*, assistant] and generation stops at end_turn (or BOS). When the
history is longer than the context allows, whole old turns are dropped (never part of a turn) so that
the prompt leaves a quarter of block_size for the reply.

The model knows two roles, user and assistant. A `system` message (OpenAI clients send one by
default) enters as a user turn at its place in the conversation: [user, its text..., end_turn]. It is
an old turn like any other, so it is the first to go when the history is cut to fit.
Characters outside the vocabulary are an error that names them (`Tokenizer.encode_known`), never
dropped silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.tokenizer import Tokenizer

ROLES = ("user", "assistant")
ROLE_ALIASES = {"system": "user"}  # roles accepted from clients -> the model's role they enter as


class ChatPrompt(NamedTuple):
    ids: list[int]  # [BOS, (role, text..., end_turn)*, assistant]
    dropped_turns: int  # old turns left out to fit the context


def reply_budget(block_size: int) -> int:
    """Tokens kept free for the reply: a quarter of the context (at least one)."""
    return max(1, block_size // 4)


def check_chat_model(tok: Tokenizer) -> None:
    if not tok.chat:
        raise ConfigError(
            "this model has no chat tokens (it was trained in plain mode, not with "
            "--mode chat); use generate/sample instead of chat"
        )


def normalise_messages(messages) -> list[tuple[str, str]]:
    """[(role, text)] from [(role, text)] or [{"role": ..., "content": ...}], validating both."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, dict):
            role, text = m.get("role"), m.get("content")
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            role, text = m
        else:
            raise DataError(f"messages[{i}] must be an object with 'role' and 'content'")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in ROLES:
            known = [*ROLES, *ROLE_ALIASES]
            raise DataError(f"messages[{i}].role: unknown role {role!r}; this model knows {known}")
        if not isinstance(text, str):
            raise DataError(f"messages[{i}].content must be a string, got {type(text).__name__}")
        out.append((role, text))
    return out


def build_chat_prompt(tok: Tokenizer, messages, block_size: int) -> ChatPrompt:
    """Prompt ids for the next assistant turn, dropping the oldest whole turns to fit.

    The prompt is at most block_size - reply_budget(block_size) tokens, except when the newest
    message alone is longer: then it is the whole prompt (with BOS and the role tokens) if that fits
    in block_size. Raises DataError if even that does not fit.
    """
    check_chat_model(tok)
    turns = normalise_messages(messages)
    limit = block_size - reply_budget(block_size)
    encoded = [
        [tok.role_id(role), *tok.encode_known(text, f"messages[{i}].content"), tok.end_turn]
        for i, (role, text) in enumerate(turns)
    ]
    used, keep = 2, 0  # BOS + the assistant token
    for turn in reversed(encoded):
        if used + len(turn) > limit:
            break
        used += len(turn)
        keep += 1
    if keep == 0:
        # the newest message alone is longer than the limit: it is used whole (never cut) as long
        # as the prompt fits in the context at all; the reply then gets less than a quarter
        if 2 + len(encoded[-1]) > block_size:
            raise DataError(
                f"the last message is {len(encoded[-1]) - 2} characters; at most "
                f"{block_size - 4} fit in the context of {block_size} tokens"
            )
        keep = 1
    ids = [tok.bos]
    for turn in encoded[len(encoded) - keep :]:
        ids.extend(turn)
    ids.append(tok.assistant)
    return ChatPrompt(ids, len(encoded) - keep)


def chat_stop_ids(tok: Tokenizer) -> list[int]:
    return [tok.end_turn, tok.bos]


# ---------------------------------------------------------------------------------------------
# REPL


def _setup_readline(history_file: str | None):
    """Line editing and persistent history when stdin is a terminal; returns a save function."""
    if not history_file or not sys.stdin.isatty():
        return lambda: None
    try:
        import readline
    except ImportError:  # no readline on this platform: plain input() still works
        return lambda: None
    path = Path(history_file).expanduser()
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(1000)

    def save():
        try:
            readline.write_history_file(path)
        except OSError:
            pass

    return save


DEFAULT_HISTORY = os.path.join("~", ".jaxsys_gpt_chat_history")


def run_repl(
    params,
    cfg,
    tok: Tokenizer,
    temperature: float = 0.5,
    seed: int = 42,
    max_new_tokens: int | None = None,
    history_file: str | None = DEFAULT_HISTORY,
    input_fn: Callable[[str], str] = input,
    out=None,
) -> int:
    """Chat until /quit or end of input. Turn k samples with seed + k; /clear forgets the history."""
    import jax.numpy as jnp

    from jaxsys.gpt.generate import generate, room, to_device_params

    check_chat_model(tok)
    out = out or sys.stdout
    save_history = _setup_readline(history_file)
    dev_params = to_device_params(params, jnp.float32)
    history: list[tuple[str, str]] = []
    turn = 0
    print("chat with the model; /clear forgets the conversation, /quit (or Ctrl-D) exits", file=out)
    try:
        while True:
            try:
                line = input_fn("you> ")
            except EOFError:
                print(file=out)
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/clear":
                history.clear()
                print("(conversation cleared)", file=out)
                continue
            if line.startswith("/"):
                print(f"unknown command {line.split()[0]!r}; commands: /clear, /quit", file=out)
                continue
            history.append(("user", line))
            try:
                prompt = build_chat_prompt(tok, history, cfg.block_size)
            except DataError as e:
                history.pop()
                print(f"error: {e}", file=out)
                continue
            if prompt.dropped_turns:
                history = history[prompt.dropped_turns :]
            budget = room(cfg, len(prompt.ids))
            n_new = budget if max_new_tokens is None else min(max_new_tokens, budget)
            ids = generate(
                dev_params,
                cfg,
                prompt.ids,
                n_new,
                temperature=temperature,
                seed=seed + turn,
                stop_ids=chat_stop_ids(tok),
                greedy=temperature <= 0,
            )
            reply = tok.decode(ids)
            print(f"bot> {reply}", file=out, flush=True)
            history.append(("assistant", reply))
            turn += 1
    finally:
        save_history()
    return 0


def messages_from_pairs(pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """[{"role": "user", ...}, {"role": "assistant", ...}, ...] from (prompt, reply) pairs."""
    msgs = []
    for p, r in pairs:
        msgs += [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
    return msgs
