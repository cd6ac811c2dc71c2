"""HTTP API (jaxsys/gpt/serve/): every endpoint with valid and invalid input, batching of concurrent
requests, and the official `openai` client against `jaxsys gpt serve` started on a loopback port. The
servers run in float32, as users serve; their tokens equal the float64 numpy model's on these models."""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jax.numpy as jnp
import numpy as np
import openai
import pytest

from jaxsys.gpt.chat import build_chat_prompt, chat_stop_ids
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.inference import InferenceModel
from jaxsys.gpt.model import param_shapes
from jaxsys.gpt.serve import ServeConfig, ServerThread, StopText, create_app
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.gpt.weights_io import save_model

CHAT_TOK = Tokenizer.from_corpus("hello world, how are you? fine.", chat=True)
PLAIN_TOK = Tokenizer(list("abcdefghijklmnopqrst"))  # same vocab size as CHAT_TOK: one compiled step
assert PLAIN_TOK.vocab_size == CHAT_TOK.vocab_size
CFG = GPTConfig(vocab_size=CHAT_TOK.vocab_size, n_embd=16, n_head=2, n_layer=1, block_size=32)
SCFG = ServeConfig(max_batch=4, chunk_steps=2, max_body_bytes=4096)


def _params(seed, std=0.3):  # wider than the 0.08 init: peaked, varied outputs
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, std, shape) for k, shape in param_shapes(CFG).items()}


@pytest.fixture(scope="module")
def chat_server():
    params = _params(0)
    with ServerThread(create_app(params, CFG, CHAT_TOK, SCFG)) as srv:
        yield srv, InferenceModel(params, CFG, CHAT_TOK)


@pytest.fixture(scope="module")
def plain_server():
    params = _params(1)
    with ServerThread(create_app(params, CFG, PLAIN_TOK, SCFG)) as srv:
        yield srv, InferenceModel(params, CFG, PLAIN_TOK)


def test_healthz_and_models(chat_server):
    srv, _ = chat_server
    h = httpx.get(srv.url + "/healthz").json()
    assert h["status"] == "ok" and h["chat"] is True and h["max_batch"] == 4
    m = httpx.get(srv.url + "/v1/models").json()
    assert m["object"] == "list" and [d["id"] for d in m["data"]] == ["microgpt"]


def test_generate_equals_numpy_inference(plain_server):
    srv, ref = plain_server
    r = httpx.post(srv.url + "/microgpt/v1/generate", json={"num_samples": 3, "seed": 7})
    assert r.status_code == 200
    samples = r.json()["samples"]
    max_new = CFG.block_size  # the most a [BOS] prompt can get
    expect = [
        PLAIN_TOK.decode(ref.generate_from_prompt([PLAIN_TOK.bos], max_new, temperature=0.5, seed=7 + i))
        for i in range(3)
    ]
    assert samples == expect and len(set(samples)) > 1
    # defaults: one sample, temperature 0.5, seed 42; a prompt prefix is continued
    assert httpx.post(srv.url + "/microgpt/v1/generate", json={}).json()["samples"] == [
        PLAIN_TOK.decode(ref.generate_from_prompt([PLAIN_TOK.bos], max_new, temperature=0.5, seed=42))
    ]
    out = httpx.post(
        srv.url + "/microgpt/v1/generate", json={"prompt": "abc", "max_tokens": 3, "temperature": 0}
    ).json()["samples"][0]
    ids = ref.generate_from_prompt([PLAIN_TOK.bos, 0, 1, 2], 3, greedy=True)
    assert out == "abc" + PLAIN_TOK.decode(ids)


def test_chat_equals_numpy_inference_under_concurrency(chat_server):
    srv, ref = chat_server
    convs = [
        [{"role": "user", "content": "hello"}],
        [
            {"role": "user", "content": "how are you?"},
            {"role": "assistant", "content": "fine"},
            {"role": "user", "content": "hello world"},
        ],
    ]
    jobs = [(convs[i % 2], 100 + i) for i in range(10)]  # more than max_batch: rows queue and join

    def call(job):
        msgs, seed = job
        return httpx.post(srv.url + "/microgpt/v1/chat", json={"messages": msgs, "seed": seed}, timeout=60).json()

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        outs = list(ex.map(call, jobs))
    for (msgs, seed), out in zip(jobs, outs):
        prompt = build_chat_prompt(CHAT_TOK, msgs, CFG.block_size).ids
        ids = ref.generate_from_prompt(
            prompt, CFG.block_size + 1 - len(prompt), temperature=0.5, seed=seed, stop_ids=chat_stop_ids(CHAT_TOK)
        )
        assert out["role"] == "assistant" and out["content"] == CHAT_TOK.decode(ids)
    assert httpx.get(srv.url + "/healthz").json()["max_active"] > 1  # decoded together


BAD = [
    ("/microgpt/v1/chat", {"messages": []}, 400, "non-empty"),
    ("/microgpt/v1/chat", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "unknown role"),
    ("/microgpt/v1/chat", {"messages": [{"role": "user", "content": 5}]}, 400, "must be a string"),
    ("/microgpt/v1/chat", {"messages": "hello"}, 400, "non-empty list"),
    ("/microgpt/v1/chat", {}, 400, "missing 'messages'"),
    ("/microgpt/v1/chat", {"messages": [{"role": "user", "content": "hello " * 9}]}, 400, "last message"),
    (
        "/microgpt/v1/chat",
        {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
        400,
        "'temperature' must be of type",
    ),
    ("/microgpt/v1/chat", {"messages": [{"role": "user", "content": "hi"}], "seed": -1}, 400, ">= 0"),
    (
        "/microgpt/v1/chat",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6},
        400,
        "'max_tokens' must be <=",
    ),
    ("/microgpt/v1/generate", {"num_samples": 51}, 400, "<= 50"),
    ("/microgpt/v1/generate", {"num_samples": 0}, 400, ">= 1"),
    ("/microgpt/v1/generate", {"num_samples": True}, 400, "must be of type int"),
    ("/microgpt/v1/generate", {"temperature": -0.5}, 400, ">= 0"),
    ("/microgpt/v1/generate", {"prompt": "hello" * 8}, 400, "does not fit"),
    ("/microgpt/v1/generate", b"{not json", 400, "malformed JSON"),
    ("/microgpt/v1/generate", b"[1, 2]", 400, "must be a JSON object"),
    ("/microgpt/v1/generate", b"", 400, "empty request body"),
    ("/microgpt/v1/generate", b"\xff\xfe", 400, "UTF-8"),
    ("/microgpt/v1/generate", b"[" * 100000, 413, "exceeds the limit"),
    ("/microgpt/v1/chat", {"messages": [{"role": "user", "content": "a" * 5000}]}, 413, "limit"),
    (
        "/v1/chat/completions",
        {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
        404,
        "does not exist",
    ),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "hi"}]}, 400, "unknown role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "boolean"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True, "n": 2}, 400, "n = 1"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stop": 5},
        400,
        "'stop' must be a string or a list of strings",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stop": ["a", 1]},
        400,
        "'stop' must be a string or a list of strings",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stop": list("abcde")},
        400,
        "at most 4 sequences, got 5",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stop": ["a", ""]},
        400,
        "1 to 64 characters, got 0",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stop": "x" * 65},
        400,
        "1 to 64 characters, got 65",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "only text parts",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0},
        400,
        ">= 1",
    ),
]


@pytest.mark.parametrize("path,body,status,msg", BAD)
def test_invalid_requests_give_json_errors(chat_server, path, body, status, msg):
    srv, _ = chat_server
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(srv.url + path, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert msg in err["message"] and err["code"] == status
    assert httpx.get(srv.url + "/healthz").status_code == 200  # the server survives


def test_stop_text_cuts_before_the_first_sequence():
    st = StopText(("abc", "cd"))
    # "ab" could start "abc": held back; "x" proves it was not; "c" + "d" completes "cd" first
    assert [st.feed(p) for p in ("xa", "b", "x", "zc")] == ["x", "", "abx", "z"]
    assert st.feed("d") == "" and st.hit and st.feed("more") == "" and st.flush() == ""
    st = StopText(("abc", "bcx"))  # two candidates overlap: the earliest start wins
    assert st.feed("zabcx") == "z" and st.hit
    st = StopText(("zz",))
    assert st.feed("az") == "a" and st.flush() == "z" and not st.hit  # end of generation: tail emitted
    st = StopText(())
    assert st.feed("any text") == "any text" and st.flush() == ""


def test_openai_stop_sequences(chat_server):
    """`stop` cuts the reply before the first stop sequence, in plain and streamed responses, with
    finish_reason "stop"; the expected text comes from the numpy model's full greedy reply."""
    srv, ref = chat_server
    msgs = [{"role": "user", "content": "hello"}]
    prompt = build_chat_prompt(CHAT_TOK, msgs, CFG.block_size).ids
    max_new = CFG.block_size + 1 - len(prompt)
    full = CHAT_TOK.decode(ref.generate_from_prompt(prompt, max_new, greedy=True, stop_ids=chat_stop_ids(CHAT_TOK)))
    assert len(full) >= 12, full  # the test needs a reply with some text in it
    url = srv.url + "/v1/chat/completions"
    plain = httpx.post(url, json={"messages": msgs, "temperature": 0}, timeout=60).json()
    assert plain["choices"][0]["message"]["content"] == full
    for stops in (
        [full[8:11]],
        full[8:11],
        [full[9:12], full[8:11]],
        [full[5:7], full[2:6]],
        ["\u2603"],
    ):  # the last is never generated
        seqs = [stops] if isinstance(stops, str) else stops
        spans = [(full.find(x), full.find(x) + len(x)) for x in seqs if x in full]  # first occurrences
        body = {"messages": msgs, "temperature": 0, "stop": stops}
        r = httpx.post(url, json=body, timeout=60).json()
        choice = r["choices"][0]
        if spans:
            # generation stops at the token that completes the first sequence to end; the reply is
            # cut before the earliest start among the sequences complete by then
            end = min(e for _, e in spans)
            expect = full[: min(b for b, e in spans if e <= end)]
            assert choice["message"]["content"] == expect and choice["finish_reason"] == "stop"
            assert r["usage"]["completion_tokens"] == end  # tokens through the one that completed it
        else:
            assert choice["message"]["content"] == full and r["usage"] == plain["usage"]
            assert choice["finish_reason"] == plain["choices"][0]["finish_reason"]
            expect = full
        reason = choice["finish_reason"]
        raw = httpx.post(url, json={**body, "stream": True}, timeout=60)
        events = [
            json.loads(line[6:])
            for line in raw.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == expect
        assert events[-1]["choices"][0]["finish_reason"] == reason
    deadline = time.time() + 30  # the stopped rows' slots are freed (guards a hang, not timing)
    while httpx.get(srv.url + "/healthz").json()["active"]:
        assert time.time() < deadline
        time.sleep(0.05)


def test_chunked_oversize_body_and_unknown_route(chat_server):
    srv, _ = chat_server

    def body():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    r = httpx.post(srv.url + "/microgpt/v1/chat", content=body())
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = httpx.get(srv.url + "/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(srv.url + "/microgpt/v1/chat")
    assert r.status_code == 405 and "error" in r.json()


def test_plain_model_has_no_chat(plain_server):
    srv, _ = plain_server
    for path in ("/microgpt/v1/chat", "/v1/chat/completions"):
        r = httpx.post(srv.url + path, json={"messages": [{"role": "user", "content": "abc"}]})
        assert r.status_code == 400 and "no chat tokens" in r.json()["error"]["message"]


def test_unknown_characters_are_named_not_dropped(chat_server):
    srv, _ = chat_server
    r = httpx.post(srv.url + "/microgpt/v1/chat", json={"messages": [{"role": "user", "content": "hello \u2603 QZ"}]})
    assert r.status_code == 400 and "U+2603 '\u2603', U+0051 'Q', U+005A 'Z'" in r.json()["error"]["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    """`jaxsys gpt serve` in a subprocess on a free loopback port."""
    d = tmp_path_factory.mktemp("served")
    params = _params(2)
    save_model(d, params, CFG, CHAT_TOK)
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxsys.cli",
            "gpt",
            "serve",
            "--model",
            str(d),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-batch",
            "4",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120  # guard against a hang, not a timing assertion
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "server did not come up"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, InferenceModel(params, CFG, CHAT_TOK)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_client_plain_and_streaming(cli_server):
    url, ref = cli_server
    page = httpx.get(url + "/")  # the chat page ships as package data
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>jaxsys chat</title>" in page.text and "/v1/chat/completions" in page.text
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["microgpt"]
    msgs = [{"role": "user", "content": "hello"}]
    prompt = build_chat_prompt(CHAT_TOK, msgs, CFG.block_size).ids
    greedy = CHAT_TOK.decode(ref.generate_from_prompt(prompt, 10, greedy=True, stop_ids=chat_stop_ids(CHAT_TOK)))
    r = client.chat.completions.create(model="microgpt", messages=msgs, temperature=0, max_tokens=10)
    assert r.choices[0].message.content == greedy and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(prompt)
    assert r.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="microgpt", messages=msgs, temperature=0, max_tokens=10, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == greedy
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    assert len(greedy) >= 4, greedy  # stop sequences through the client: the reply ends before one
    cut = client.chat.completions.create(
        model="microgpt", messages=msgs, temperature=0, max_tokens=10, stop=[greedy[2:4]]
    )
    assert cut.choices[0].message.content == greedy[: greedy.index(greedy[2:4])]
    assert cut.choices[0].finish_reason == "stop"
    # seeded sampling is reproducible; n choices use seeds seed, seed+1, ...
    a = client.chat.completions.create(model="microgpt", messages=msgs, seed=5, n=3)
    b = client.chat.completions.create(model="microgpt", messages=msgs, seed=5, n=3)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    with pytest.raises(openai.BadRequestError, match="unknown role"):
        client.chat.completions.create(model="microgpt", messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=msgs)
    raw = httpx.post(
        url + "/v1/chat/completions", json={"messages": msgs, "stream": True, "temperature": 0, "max_tokens": 10}
    )
    events = [line[6:] for line in raw.text.splitlines() if line.startswith("data: ")]
    assert raw.headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.x64  # the batcher in float64: the same tokens as the numpy model by construction
def test_batcher_rows_cross_attention_buckets():
    """Chunks pick the attention length from the rows in flight (64, then 80 here); rows that join
    later and rows running past position 64 still equal the numpy model."""
    import asyncio

    from jaxsys.gpt.serve import Batcher, collect

    cfg = GPTConfig(vocab_size=CHAT_TOK.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=80)
    rng = np.random.default_rng(5)
    params = {k: rng.normal(0, 0.3, s) for k, s in param_shapes(cfg).items()}
    ref = InferenceModel(params, cfg, CHAT_TOK)
    jobs = [([CHAT_TOK.bos], 80, 0.0, 0), ([CHAT_TOK.bos, 0, 1], 70, 0.8, 11), ([CHAT_TOK.bos, 2], 20, 1.0, 12)]

    async def run():
        b = Batcher(params, cfg, ServeConfig(max_batch=2, chunk_steps=3), dtype=jnp.float64)
        b.start()
        try:
            rows = [b.submit(p, n, t, s, []) for p, n, t, s in jobs]  # 3 rows, 2 slots: one waits
            return await asyncio.gather(*(collect(r) for r in rows))
        finally:
            await b.stop()

    for (p, n, t, s), (ids, reason) in zip(jobs, asyncio.run(run())):
        assert ids == ref.generate_from_prompt(p, n, temperature=t or 1.0, seed=s, greedy=t == 0, stop_ids=[])
        assert reason == "length" and len(ids) == min(n, cfg.block_size + 1 - len(p))
