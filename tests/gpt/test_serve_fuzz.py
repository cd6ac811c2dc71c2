"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (/openapi.json, whose request
bodies come from jaxsys.gpt.serve.schemas) with schemathesis, which drives hypothesis: valid and
invalid bodies for every operation. Every response is 2xx, or 4xx with a JSON error body; none is
a 5xx (issue 21). Plus raw byte bodies (hypothesis directly) for what a schema cannot express.

Example counts: 25 per operation and generation mode (positive and negative) for the 5 operations
(about 250 requests), and 100 raw bodies (bytes, and near-valid bodies from the endpoints' field names with hostile
values: 5,000-digit numbers, lone surrogates, characters outside the vocabulary): about 25 s on 2 cores."""

import json

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.model import param_shapes
from jaxsys.gpt.serve import ServeConfig, ServerThread, create_app
from jaxsys.gpt.tokenizer import Tokenizer

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")

EXAMPLES_PER_OPERATION = 25
RAW_EXAMPLES = 100

TOK = Tokenizer.from_corpus("hello world, how are you? fine.", chat=True)
CFG = GPTConfig(vocab_size=TOK.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=16)


@pytest.fixture(scope="module")
def server():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(0, 0.3, s) for k, s in param_shapes(CFG).items()}
    scfg = ServeConfig(max_batch=4, chunk_steps=4, max_body_bytes=8192, max_num_samples=4, read_timeout_s=5.0)
    with ServerThread(create_app(params, CFG, TOK, scfg)) as srv:
        yield srv


def _check(status: int, text: str) -> None:
    assert status < 500, text[:500]
    if status >= 400:
        err = json.loads(text)["error"]
        assert isinstance(err["message"], str) and err["code"] == status


def test_api_from_its_openapi_schema_never_5xx(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == 5, [op.label for op in ops]  # /healthz, /v1/models and the 3 POST endpoints
    for op in ops:
        for mode in schemathesis.GenerationMode:
            if mode == schemathesis.GenerationMode.NEGATIVE and op.method.upper() == "GET":
                continue  # no parameters, no body: nothing to make invalid

            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                r = case.call(base_url=server.url, timeout=60)
                _check(r.status_code, r.text)

            run()


FIELDS = ["prompt", "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "seed", "n"]
FIELDS += ["num_samples", "stream", "stop"]
BIG = "\x00big\x00"  # replaced by a 5,000-digit number literal in the body text
_hostile = st.sampled_from([BIG, "\ud800", "\U0001f600H\u00e9", "hello", "system", "user", "text", 1e-40, 1e300])
_leaf = st.one_of(
    _hostile,
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "type", "text"]), inner)
    ),
    max_leaves=10,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool"]), "content": _value | st.just("hello")}
)
_body = st.dictionaries(
    st.sampled_from(FIELDS), _hostile | _value | st.lists(_message, min_size=1, max_size=3), min_size=1, max_size=5
)  # near-valid bodies built from the endpoints' own field names with hostile values


def _encode(v, ascii_only: bool) -> bytes:
    text = json.dumps(v, ensure_ascii=ascii_only).replace(json.dumps(BIG), "9" * 5000)
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=RAW_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/v1/chat/completions", "/microgpt/v1/chat", "/microgpt/v1/generate"]),
    body=st.one_of(
        st.tuples(_body, st.booleans()).map(lambda a: _encode(*a)),
        st.binary(max_size=64),
        st.tuples(_value, st.booleans()).map(lambda a: _encode(*a)),
    ),
)
def test_raw_bodies_never_5xx(server, path, body):
    r = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    _check(r.status_code, r.text)
