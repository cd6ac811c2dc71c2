"""The OpenAI-compatible protocol: GET /v1/models and POST /v1/chat/completions (plain and
`stream: true` server-sent events, `n`, `seed`, `stop`, `max_tokens`/`max_completion_tokens`).

`usage` counts the prompt once: total_tokens = prompt_tokens + completion_tokens, whatever `n`.
`system` messages are accepted and enter the model's chat format as user turns (see jaxsys.gpt.chat).
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from jaxsys.gpt import chat as chatlib
from jaxsys.gpt.serve.batcher import collect_text
from jaxsys.gpt.serve.protocol import (
    ApiError,
    StopText,
    error_body,
    feed_tokens,
    get_bool,
    get_field,
    read_json,
    stop_sequences,
)
from jaxsys.gpt.serve.schemas import CHAT_COMPLETIONS_BODY, request_body
from jaxsys.gpt.serve.service import Service


def openai_messages(raw) -> list[dict]:
    """OpenAI messages -> [{"role", "content": str}] (content may be a list of text parts)."""
    if not isinstance(raw, list):
        raise ApiError(400, "'messages' must be a list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object", "messages")
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise ApiError(400, f"messages[{i}].content[{j}]: only text parts are supported", "messages")
                parts.append(part["text"])
            content = "".join(parts)
        out.append({"role": m.get("role"), "content": content})
    return out


def models(svc: Service, created: int) -> dict:
    name = svc.scfg.model_name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "jaxsys"}]}


class Completion:
    """One validated /v1/chat/completions request."""

    def __init__(self, svc: Service, body: dict):
        name = svc.scfg.model_name
        model = get_field(body, "model", str, name)
        if model != name:
            raise ApiError(
                404, f"the model {model!r} does not exist; this server has {name!r}", "model", "model_not_found"
            )
        if "messages" not in body:
            raise ApiError(400, "missing 'messages'", "messages")
        self.svc = svc
        self.stops = stop_sequences(body)
        messages = openai_messages(body["messages"])
        self.stream = get_bool(body, "stream", False)
        self.n = get_field(body, "n", int, 1, 1, svc.scfg.max_num_samples)
        if self.stream and self.n != 1:
            raise ApiError(400, "streaming supports n = 1 only", "n")
        self.temperature, self.seed = svc.sampling(body, 1.0, None)
        self.prompt = svc.chat_prompt(messages)
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        self.max_new = svc.budget(body, key, len(self.prompt))
        self.stop_ids = chatlib.chat_stop_ids(svc.tok)
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _head(self, kind: str) -> dict:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.svc.scfg.model_name,
            "system_fingerprint": None,
        }

    async def reply(self) -> dict:
        tok, stops = self.svc.tok, self.stops
        outs = await self.svc.run_rows(
            self.prompt,
            self.n,
            self.max_new,
            self.temperature,
            self.seed,
            self.stop_ids,
            lambda r: collect_text(r, tok, stops),
        )
        completion = sum(u for _, u, _ in outs)
        return {
            **self._head("chat.completion"),
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None, "finish_reason": r}
                for i, (t, _, r) in enumerate(outs)
            ],
            "usage": {
                "prompt_tokens": len(self.prompt),
                "completion_tokens": completion,
                "total_tokens": len(self.prompt) + completion,
            },
        }

    def _chunk(self, delta: dict, finish=None) -> str:
        obj = {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return f"data: {json.dumps(obj)}\n\n"

    def submit(self):
        return self.svc.batcher.submit(self.prompt, self.max_new, self.temperature, self.seed, self.stop_ids)

    async def events(self, row):
        """The server-sent events of a streamed reply; the row is cancelled when the client leaves."""
        st = StopText(self.stops)
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            while True:
                kind, val = await row.events.get()
                if kind == "tokens":
                    text, _ = feed_tokens(st, self.svc.tok, val)
                    if text:
                        yield self._chunk({"content": text})
                    if st.hit:
                        yield self._chunk({}, "stop")
                        break
                elif isinstance(val, Exception):
                    err = error_body(500, f"generation failed: {val}", None, "server_error")
                    yield f"data: {json.dumps(err)}\n\n"
                    break
                else:
                    if text := st.flush():
                        yield self._chunk({"content": text})
                    yield self._chunk({}, val)
                    break
            yield "data: [DONE]\n\n"
        finally:
            row.cancelled = True


async def chat_completions(svc: Service, request: Request):
    body = await read_json(request, svc.scfg.max_body_bytes, svc.scfg.read_timeout_s)
    c = Completion(svc, body)
    if not c.stream:
        return await c.reply()
    return StreamingResponse(
        c.events(c.submit()), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def add_routes(app: FastAPI, svc: Service) -> None:
    created = int(time.time())

    @app.get("/v1/models")
    async def _models():
        return models(svc, created)

    @app.post("/v1/chat/completions", openapi_extra=request_body(CHAT_COMPLETIONS_BODY))
    async def _chat_completions(request: Request):
        return await chat_completions(svc, request)
