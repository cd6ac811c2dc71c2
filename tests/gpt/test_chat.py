"""Chat prompt building (jaxsys/gpt/chat.py) and the `jaxsys gpt chat` REPL (stdin and a pty)."""

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxsys import cli
from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import chat
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.generate import generate
from jaxsys.gpt.model import param_shapes
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.gpt.weights_io import save_model

TOK = Tokenizer.from_corpus("hello world, how are you? fine.", chat=True)


def random_params(cfg, seed, std=0.08):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, std, shape) for k, shape in param_shapes(cfg).items()}


def test_prompt_matches_training_format():
    turns = [("user", "hello"), ("assistant", "how are you?"), ("user", "fine")]
    p = chat.build_chat_prompt(TOK, [{"role": r, "content": t} for r, t in turns], 512)
    # training sees [BOS, (role, text, end_turn)*, BOS]; the prompt replaces the final BOS by assistant
    assert p.ids == TOK.encode_conversation(turns)[:-1] + [TOK.assistant]
    assert p.dropped_turns == 0
    assert chat.build_chat_prompt(TOK, turns, 512).ids == p.ids  # (role, text) pairs work too


@pytest.mark.parametrize("block_size", [32, 48, 64])
def test_truncation_drops_whole_old_turns(block_size):
    texts = ["hello", "how are you?", "fine", "hello world", "who are you", "how", "are", "you?"]
    turns = [("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    p = chat.build_chat_prompt(TOK, turns, block_size)
    limit = block_size - block_size // 4
    # independent: the largest suffix of whole turns whose conversation encoding fits
    keep = max(k for k in range(1, len(turns) + 1) if len(TOK.encode_conversation(turns[len(turns) - k :])) <= limit)
    assert p.dropped_turns == len(turns) - keep
    assert p.ids == TOK.encode_conversation(turns[len(turns) - keep :])[:-1] + [TOK.assistant]
    assert len(p.ids) <= limit and block_size - len(p.ids) >= block_size // 4


def test_long_newest_message_is_kept_whole_if_it_fits():
    msg = "hello world how"  # 15 chars + 4 special tokens = 19 > 24 - 6 = 18
    p = chat.build_chat_prompt(TOK, [("user", "fine"), ("assistant", "fine"), ("user", msg)], 24)
    assert p.ids == TOK.encode_conversation([("user", msg)])[:-1] + [TOK.assistant]
    assert p.dropped_turns == 2
    assert len(chat.build_chat_prompt(TOK, [("user", "a" * 20)], 24).ids) == 24
    with pytest.raises(DataError, match="last message is 21 characters; at most 20 fit"):
        chat.build_chat_prompt(TOK, [("user", "a" * 21)], 24)


def test_prompt_errors():
    with pytest.raises(DataError, match="last message"):
        chat.build_chat_prompt(TOK, [("user", "hello " * 10)], 32)
    with pytest.raises(ConfigError, match="no chat tokens"):
        chat.build_chat_prompt(Tokenizer(list("ab")), [("user", "a")], 32)
    with pytest.raises(DataError, match="unknown role 'tool'"):
        chat.build_chat_prompt(TOK, [{"role": "tool", "content": "hi"}], 32)
    with pytest.raises(DataError, match="non-empty"):
        chat.build_chat_prompt(TOK, [], 32)
    with pytest.raises(DataError, match="must be a string"):
        chat.build_chat_prompt(TOK, [{"role": "user", "content": 3}], 32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = GPTConfig(vocab_size=TOK.vocab_size, n_embd=16, n_head=2, n_layer=1, block_size=32)
    params = random_params(cfg, 0)
    d = tmp_path_factory.mktemp("chatmodel")
    save_model(d, params, cfg, TOK)
    return d, params, cfg


def test_repl_through_stdin(model, monkeypatch, capsys):
    d, params, cfg = model
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/clear\nhello\n/bogus\n\n/quit\nnot read\n"))
    assert cli.main(["gpt", "chat", "--model", str(d), "--history", ""]) == 0
    out = capsys.readouterr().out
    replies = [line[len("you> bot> ") :] for line in out.splitlines() if line.startswith("you> bot> ")]
    assert len(replies) == 2 and "(conversation cleared)" in out and "unknown command '/bogus'" in out
    # after /clear both turns have the same prompt; turn k samples with seed 42 + k
    prompt = chat.build_chat_prompt(TOK, [("user", "hello")], cfg.block_size).ids
    for k, reply in enumerate(replies):
        ids = generate(
            params,
            cfg,
            prompt,
            cfg.block_size + 1 - len(prompt),
            temperature=0.5,
            seed=42 + k,
            stop_ids=chat.chat_stop_ids(TOK),
        )
        assert reply == TOK.decode(ids)
    assert replies[0] != replies[1]


def test_repl_plain_model_is_rejected(tmp_path, monkeypatch, capsys):
    tok = Tokenizer(list("ab"))
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=8)
    params = random_params(cfg, 1)
    save_model(tmp_path, params, cfg, tok)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert cli.main(["gpt", "chat", "--model", str(tmp_path)]) == 2
    assert "no chat tokens" in capsys.readouterr().err


def _read_until(fd, marker: bytes, buf: bytearray, deadline: float) -> bytes:
    while marker not in buf:
        if time.time() > deadline:
            raise AssertionError(f"no {marker!r} from the REPL; got {bytes(buf)!r}")
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                data = b""
            if not data:
                raise AssertionError(f"the REPL exited before {marker!r}; output: {bytes(buf)!r}")
            buf += data
    i = buf.index(marker) + len(marker)
    head = bytes(buf[:i])
    del buf[:i]
    return head


def test_repl_in_a_pty_with_readline_history(model, tmp_path):
    d, _, _ = model
    hist = tmp_path / "history"
    master, slave = pty.openpty()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxsys.cli",
            "gpt",
            "chat",
            "--model",
            str(d),
            "--history",
            str(hist),
            "--temperature",
            "0",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    buf = bytearray()
    deadline = time.time() + 120  # a guard against hanging, not a timing assertion
    try:
        _read_until(master, b"you> ", buf, deadline)
        os.write(master, b"hellp\x7fo\n")  # line editing: backspace fixes the typo
        _read_until(master, b"bot> ", buf, deadline)
        _read_until(master, b"you> ", buf, deadline)
        os.write(master, b"/quit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert hist.read_text().splitlines()[-2:] == ["hello", "/quit"]


def test_repl_names_out_of_vocabulary_characters(model, monkeypatch, capsys):
    """Issue 21 item 10: characters outside the vocabulary are named, nothing is generated (as the
    server's 400), and the conversation goes on."""
    d, params, cfg = model
    monkeypatch.setattr(sys, "stdin", io.StringIO("\U0001f600H\u00e9 hello\nhello\n/quit\n"))
    assert cli.main(["gpt", "chat", "--model", str(d), "--history", ""]) == 0
    out = capsys.readouterr().out
    assert "not in the model's vocabulary" in out and "U+1F600" in out and "U+00E9" in out
    assert len([line for line in out.splitlines() if "bot> " in line]) == 1
