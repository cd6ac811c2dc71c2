"""Hostile and unusual HTTP clients against the GPT server (issue 21, items 1, 2, 7-10): every
answer is a JSON body, never a 500 or a traceback in the log; float32, the dtype users serve in."""

import logging
import socket
import time

import httpx
import numpy as np
import pytest

from jaxsys.gpt.chat import build_chat_prompt, chat_stop_ids
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.model import param_shapes
from jaxsys.gpt.serve import ServeConfig, ServerThread, create_app
from jaxsys.gpt.tokenizer import Tokenizer

CHAT_TOK = Tokenizer.from_corpus("hello world, how are you? fine.", chat=True)
CFG = GPTConfig(vocab_size=CHAT_TOK.vocab_size, n_embd=16, n_head=2, n_layer=1, block_size=32)
HI = [{"role": "user", "content": "hello"}]


def _params(seed=0, std=0.3):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, std, shape) for k, shape in param_shapes(CFG).items()}


@pytest.fixture(scope="module")
def server():
    params = _params()
    scfg = ServeConfig(max_batch=4, chunk_steps=2, max_body_bytes=16384)
    with ServerThread(create_app(params, CFG, CHAT_TOK, scfg)) as srv:
        yield srv, InferenceModel(params, CFG, CHAT_TOK)


def _greedy(ref, prompt, max_new=None):
    n = CFG.block_size + 1 - len(prompt) if max_new is None else max_new
    return CHAT_TOK.decode(ref.generate_from_prompt(prompt, n, greedy=True, stop_ids=chat_stop_ids(CHAT_TOK)))


def test_huge_max_tokens_is_400_and_the_connection_stays_usable(server):
    """Item 1: a 5,000-digit max_tokens was a 500 (int conversion limit) that reset the connection."""
    srv, _ = server
    body = b'{"messages": [{"role": "user", "content": "hello"}], "max_tokens": ' + b"9" * 5000 + b"}"
    with httpx.Client(base_url=srv.url) as c:
        for path in ("/v1/chat/completions", "/microgpt/v1/chat"):
            r = c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert "number literal of 5000 characters" in r.json()["error"]["message"]
            again = c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2, "temperature": 0})
            assert again.status_code == 200  # same keep-alive connection


def test_lone_surrogate_is_a_json_400_never_a_500(server):
    """Item 2: a lone surrogate in the prompt was echoed into the response (UnicodeEncodeError)."""
    srv, _ = server
    for path, body in (
        ("/microgpt/v1/generate", b'{"prompt": "\\ud800"}'),
        ("/microgpt/v1/chat", b'{"messages": [{"role": "user", "content": "hi\\udfff"}]}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
    ):
        r = httpx.post(srv.url + path, content=body)
        assert r.status_code == 400, r.text
        assert "U+D" in r.json()["error"]["message"]
    r = httpx.post(srv.url + "/v1/chat/completions", content=b'{"model": "\\ud800x", "messages": []}')
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]


def test_usage_counts_the_prompt_once_for_n_choices(server):
    """Item 8: n=3 reported total_tokens = 3 * prompt + completion."""
    srv, _ = server
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": HI, "n": 3, "seed": 1}, timeout=60).json()
    u = r["usage"]
    assert len(r["choices"]) == 3
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["prompt_tokens"] == len(build_chat_prompt(CHAT_TOK, HI, CFG.block_size).ids)


def test_system_messages_enter_as_user_turns(server):
    """Item 9: a `system` message (OpenAI clients send one by default) is a user turn in place."""
    srv, ref = server
    msgs = [{"role": "system", "content": "fine"}, *HI]
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": msgs, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    as_user = [{"role": "user", "content": "fine"}, *HI]
    prompt = build_chat_prompt(CHAT_TOK, as_user, CFG.block_size).ids
    assert r.json()["usage"]["prompt_tokens"] == len(prompt)
    assert r.json()["choices"][0]["message"]["content"] == _greedy(ref, prompt)
    r = httpx.post(srv.url + "/microgpt/v1/chat", json={"messages": msgs, "temperature": 0}, timeout=60)
    assert r.status_code == 200 and r.json()["content"] == _greedy(ref, prompt)


def test_out_of_vocabulary_characters_are_a_400_naming_them(server):
    """Item 10: "😀Hé" reached the model as "H" (here: as "") without telling the client."""
    srv, _ = server
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\U0001f600Hé hello"}]}),
        ("/microgpt/v1/chat", {"messages": [{"role": "user", "content": "\U0001f600Hé hello"}]}),
        ("/microgpt/v1/generate", {"prompt": "\U0001f600Hé hello"}),
    ):
        r = httpx.post(srv.url + path, json=body)
        assert r.status_code == 400, r.text
        msg = r.json()["error"]["message"]
        assert "not in the model's vocabulary" in msg
        assert "U+1F600" in msg and "U+0048" in msg and "U+00E9" in msg and "U+0068" not in msg


def _raw(srv, data: bytes) -> socket.socket:
    s = socket.create_connection((srv.host, srv.port), timeout=30)
    s.sendall(data)
    return s


def test_slow_body_times_out_and_disconnects_log_no_tracebacks(caplog):
    """Item 7: a client that promises 100 bytes and sends 15 held its request open forever, and each
    such client that left wrote two ClientDisconnect tracebacks to the log."""
    scfg = ServeConfig(max_batch=2, chunk_steps=2, read_timeout_s=0.5)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with caplog.at_level(logging.INFO), ServerThread(create_app(_params(), CFG, CHAT_TOK, scfg)) as srv:
        s = _raw(srv, head + b'{"messages": [{')
        t0 = time.time()
        reply = s.recv(65536)
        assert time.time() - t0 < 20  # a hang guard; the timeout is 0.5 s
        assert reply.startswith(b"HTTP/1.1 408") and b"timed out" in reply, reply[:300]
        s.close()
        caplog.clear()
        for _ in range(5):  # clients that leave mid-body
            _raw(srv, head + b'{"messages": [{').close()
        time.sleep(1.5)
        assert httpx.get(srv.url + "/healthz").status_code == 200
    records = [r for r in caplog.records if r.name.startswith(("jaxsys", "uvicorn"))]
    assert not any(r.exc_info for r in records), [r.getMessage() for r in records]
    assert not any("Traceback" in r.getMessage() for r in records)
    assert len([r for r in records if r.levelno >= logging.WARNING]) <= 5  # at most one line per client


def test_any_exception_is_a_json_500_with_one_log_line(caplog):
    """The one place (ErrorMiddleware): an unexpected exception in a route is a JSON 500 naming its
    type, one log line without a traceback, and the connection keeps serving."""
    app = create_app(_params(), CFG, CHAT_TOK, ServeConfig(max_batch=2, chunk_steps=2))

    @app.get("/boom")
    async def _boom():
        raise RuntimeError("deliberate")

    with caplog.at_level(logging.INFO), ServerThread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.get("/boom")
        assert r.status_code == 500 and r.json()["error"]["message"] == "internal error: RuntimeError"
        assert c.get("/healthz").status_code == 200  # same connection
    records = [r for r in caplog.records if r.name.startswith(("jaxsys", "uvicorn"))]
    assert not any(r.exc_info for r in records)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == ["GET /boom: RuntimeError: deliberate"]
