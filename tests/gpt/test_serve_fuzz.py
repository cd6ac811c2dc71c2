"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (/openapi.json, whose request
bodies come from jaxsys.gpt.serve.schemas) with schemathesis, which drives hypothesis: valid and
invalid bodies for every operation. Every response is 2xx, or 4xx with a JSON error body; none is
a 5xx (issue 21). Plus raw byte bodies (hypothesis directly) for what a schema cannot express.

Example counts: 25 per operation and generation mode (positive and negative) for the 5 operations
(about 250 requests), and 60 raw bodies: about 10 s on 2 cores."""

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
RAW_EXAMPLES = 60

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


@settings(max_examples=RAW_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/v1/chat/completions", "/microgpt/v1/chat", "/microgpt/v1/generate"]),
    body=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=10,
        ).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    ),
)
def test_raw_bodies_never_5xx(server, path, body):
    r = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    _check(r.status_code, r.text)
