"""HTTP chat API for a GPT model on FastAPI + uvicorn.

Endpoints: POST /microgpt/v1/generate, POST /microgpt/v1/chat, POST /v1/chat/completions (OpenAI
compatible, incl. `stream: true` server-sent events and `stop` sequences), GET /v1/models,
GET /healthz. Errors are JSON `{"error": {"message", "type", "param", "code"}}` (the OpenAI error
shape).

Concurrency: every request becomes one or more rows that an asyncio batcher task places into the free
slots of a fixed-size decode batch (`ServeConfig.max_batch`); the batch advances `chunk_steps` jitted
decode steps at a time in a worker thread, and between chunks finished rows are answered and queued
requests join. Requests that arrive together are thus decoded in the same jitted steps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import secrets
import socket
import threading
import time
import uuid

import jax.numpy as jnp
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import chat as chatlib
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.generate import (
    HostState,
    advance,
    attn_bucket,
    attn_buckets,
    default_uniforms,
    finish_reason,
    init_kv,
    prefill,
    prefill_buckets,
    prefill_row,
    room,
    to_device_params,
)
from jaxsys.gpt.tokenizer import Tokenizer

log = logging.getLogger("jaxsys.gpt.serve")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    model_name: str = "microgpt"  # the id reported by /v1/models and in completions
    max_batch: int = 16  # rows decoded together in one jitted step (static)
    chunk_steps: int = 4  # decode steps per jitted call between batch updates
    max_num_samples: int = 50  # limit of num_samples (/generate) and n (/v1/chat/completions)
    max_tokens_limit: int | None = None  # cap on max_tokens (None: block_size)
    max_body_bytes: int = 256 * 1024  # larger request bodies get 413
    max_queue: int = 4096  # queued rows beyond this get 503

    def validate(self) -> ServeConfig:
        for name in ("max_batch", "chunk_steps", "max_num_samples", "max_body_bytes", "max_queue"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ServeConfig.{name} must be an int >= 1, got {v!r}")
        return self


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.type = status, message, param, type_


def error_body(status: int, message: str, param=None, type_="invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


# ---------------------------------------------------------------------------------------------
# batcher


class _Row:
    """One generation (a slot's occupant): its prompt, sampling settings and output channel."""

    def __init__(self, prompt, max_new, temperature, seed, stop_ids):
        self.prompt, self.max_new, self.temperature = prompt, max_new, temperature
        self.seed, self.stop_ids = seed, stop_ids
        self.events: asyncio.Queue = asyncio.Queue()  # ("tokens", [ids]) ... then ("done", reason|exc)
        self.emitted = 0
        self.cancelled = False


class Batcher:
    """Fixed-size decode batch fed from an asyncio queue; runs as a task on the server's loop."""

    def __init__(self, params, cfg: GPTConfig, scfg: ServeConfig, dtype=jnp.float32):
        self.cfg, self.scfg, self.dtype = cfg, scfg, dtype
        self.params = to_device_params(params, dtype)
        self.hs = HostState(cfg, scfg.max_batch, np.float64 if dtype == jnp.float64 else np.float32)
        self.kv = init_kv(cfg, scfg.max_batch, dtype)
        self.slots: list[_Row | None] = [None] * scfg.max_batch
        self.queue: asyncio.Queue | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gpt-decode")
        self.task: asyncio.Task | None = None
        self.dev_state = None  # the DecodeState on device; re-uploaded only after slot changes
        self.dirty = True
        self.to_prefill: list[int] = []  # slots placed since the last chunk, prompts not yet fed
        self.steps = 0  # jitted chunks run (for /healthz and tests)
        self.max_active = 0  # most rows decoded together so far
        self.rows_decoded = 0  # sum over chunks of the rows in flight (mean batch occupancy)
        self.chunk_seconds = 0.0  # time inside jitted chunks

    def warmup(self) -> None:
        """Compile the decode chunk for every attention bucket (all rows idle: returns at once) and the
        prompt prefill for every prompt bucket (into row 0, which the next placed row overwrites)."""
        for a in attn_buckets(self.cfg):
            self._run_chunk(a)
        for n in prefill_buckets(self.cfg):
            self.kv = prefill(self.params, self.kv, jnp.zeros(n, jnp.int32), jnp.int32(0), cfg=self.cfg, length=n)

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        self.pool.shutdown(wait=False)

    def queued(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    def active(self) -> int:
        return sum(r is not None for r in self.slots)

    def submit(self, prompt, max_new, temperature, seed, stop_ids) -> _Row:
        if self.queued() >= self.scfg.max_queue:
            raise ApiError(
                503, "the server is overloaded (too many queued generations); retry later", type_="server_error"
            )
        row = _Row(prompt, max_new, temperature, seed, stop_ids)
        self.queue.put_nowait(row)
        return row

    def _run_chunk(self, attn_len: int | None = None) -> None:
        t0 = time.perf_counter()
        for b in self.to_prefill:  # rows placed since the last chunk (moves them to their last prompt token)
            self.kv = prefill_row(self.params, self.kv, self.hs, b, self.cfg)
        self.to_prefill.clear()
        if attn_len is None:  # cover every position an active row can feed during this chunk
            active = ~self.hs.done
            need = int(self.hs.pos[active].max()) + self.scfg.chunk_steps + 1 if active.any() else 1
            attn_len = attn_bucket(self.cfg, need)
        st = self.hs.to_device() if self.dirty or self.dev_state is None else self.dev_state
        self.dirty = False
        self.kv, self.dev_state = advance(
            self.params, self.kv, st, jnp.int32(self.scfg.chunk_steps), cfg=self.cfg, attn_len=attn_len
        )
        self.hs.update_from(self.dev_state)
        self.chunk_seconds += time.perf_counter() - t0

    def _place(self, row: _Row) -> None:
        if row.cancelled:
            return
        b = self.slots.index(None)
        u = default_uniforms(row.seed, self.cfg.block_size)
        self.hs.place(b, row.prompt, row.max_new, row.temperature, u, row.stop_ids)
        self.to_prefill.append(b)  # its prompt goes in one pass, in the worker thread, before the chunk
        self.slots[b] = row
        self.dirty = True

    def _emit(self) -> None:
        for b, row in enumerate(self.slots):
            if row is None:
                continue
            if row.cancelled:
                self.hs.done[b] = True
                self.slots[b] = None
                self.dirty = True
                continue
            gen = self.hs.generated(b)
            if self.hs.done[b]:
                g = finish_reason(gen, row.stop_ids)
                if len(g.tokens) > row.emitted:
                    row.events.put_nowait(("tokens", g.tokens[row.emitted :]))
                row.events.put_nowait(("done", g.finish_reason))
                self.slots[b] = None
            elif len(gen) > row.emitted:
                row.events.put_nowait(("tokens", gen[row.emitted :]))
                row.emitted = len(gen)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.active() == 0:
                self._place(await self.queue.get())
            while None in self.slots and not self.queue.empty():
                self._place(self.queue.get_nowait())
            if self.active() == 0:
                continue
            self.max_active = max(self.max_active, self.active())
            self.rows_decoded += self.active()
            try:
                await loop.run_in_executor(self.pool, self._run_chunk)
                self.steps += 1
            except Exception as e:  # fail the rows in flight, keep serving
                log.exception("decode step failed")
                for b, row in enumerate(self.slots):
                    if row is not None:
                        row.events.put_nowait(("done", e))
                        self.slots[b] = None
                self.hs.done[:] = True
                self.dirty = True
                self.to_prefill.clear()
                self.kv = init_kv(self.cfg, self.scfg.max_batch, self.dtype)
                continue
            self._emit()


async def _collect(row: _Row) -> tuple[list[int], str]:
    tokens: list[int] = []
    while True:
        kind, val = await row.events.get()
        if kind == "tokens":
            tokens.extend(val)
        elif isinstance(val, Exception):
            raise ApiError(500, f"generation failed: {val}", type_="server_error")
        else:
            return tokens, val


MAX_STOP_SEQUENCES = 4  # as in the OpenAI API
MAX_STOP_CHARS = 64


class StopText:
    """Cuts generated text before the first of the `stop` sequences (OpenAI semantics: the returned
    text never contains the sequence). feed(piece) returns the text that is safe to emit now; a tail
    that could still grow into a stop sequence is held back until the next piece (or flush())."""

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops, self.buf, self.hit = stops, "", False

    def feed(self, piece: str) -> str:
        if self.hit:
            return ""
        self.buf += piece
        found = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit = True
            out, self.buf = self.buf[: min(found)], ""
            return out
        cut = len(self.buf) - self._held_tail()
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def _held_tail(self) -> int:
        """Length of the longest end of buf that begins a stop sequence (it could still complete one)."""
        for k in range(min(len(self.buf), max((len(s) for s in self.stops), default=1) - 1), 0, -1):
            if any(s.startswith(self.buf[-k:]) for s in self.stops):
                return k
        return 0

    def flush(self) -> str:
        out, self.buf = ("" if self.hit else self.buf), ""
        return out


def _feed_tokens(st: StopText, tok: Tokenizer, ids: list[int]) -> tuple[str, int]:
    """Feeds ids one at a time; returns (text to emit, ids consumed: all, or through the id that
    completed a stop sequence)."""
    parts = []
    for n, i in enumerate(ids, 1):
        parts.append(st.feed(tok.decode([i])))
        if st.hit:
            return "".join(parts), n
    return "".join(parts), len(ids)


async def _collect_text(row: _Row, tok: Tokenizer, stops: tuple[str, ...]) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of one row, stopped early at a stop sequence (the
    row is then cancelled, which frees its slot). Completion tokens count the end-of-turn token of a
    row that stopped on it, as the token-list path does."""
    st, parts, used = StopText(stops), [], 0
    while True:
        kind, val = await row.events.get()
        if kind == "tokens":
            text, n = _feed_tokens(st, tok, val)
            parts.append(text)
            used += n
            if st.hit:
                row.cancelled = True
                return "".join(parts), used, "stop"
        elif isinstance(val, Exception):
            raise ApiError(500, f"generation failed: {val}", type_="server_error")
        else:
            parts.append(st.flush())
            return "".join(parts), used + (val == "stop"), val


# ---------------------------------------------------------------------------------------------
# request validation


def _get(body: dict, key: str, kinds, default, lo=None, hi=None, allow_none=True):
    if key not in body or (allow_none and body[key] is None):
        return default
    v = body[key]
    ok = isinstance(v, kinds) and not isinstance(v, bool)
    if not ok:
        names = "/".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ApiError(400, f"'{key}' must be of type {names}, got {type(v).__name__}", key)
    if isinstance(v, float) and not np.isfinite(v):
        raise ApiError(400, f"'{key}' must be finite, got {v}", key)
    if lo is not None and v < lo:
        raise ApiError(400, f"'{key}' must be >= {lo}, got {v}", key)
    if hi is not None and v > hi:
        raise ApiError(400, f"'{key}' must be <= {hi}, got {v}", key)
    return v


async def read_json(request, max_bytes: int) -> dict:
    """The request body as a JSON object; 413 beyond max_bytes (checked while reading), 400 if bad."""
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            if int(cl) > max_bytes:
                raise ApiError(413, f"request body of {cl} bytes exceeds the limit of {max_bytes}")
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > max_bytes:
            raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes")
    if not buf:
        raise ApiError(400, "empty request body; expected a JSON object")
    try:
        body = json.loads(bytes(buf).decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _openai_messages(raw) -> list[dict]:
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


# ---------------------------------------------------------------------------------------------
# app


def create_app(
    params, cfg: GPTConfig, tok: Tokenizer, scfg: ServeConfig | None = None, dtype=jnp.float32, warmup: bool = True
):
    """The FastAPI app serving one model; its batcher starts with the app (lifespan)."""
    cfg.validate()
    scfg = (scfg or ServeConfig()).validate()
    if cfg.vocab_size != tok.vocab_size:
        raise ConfigError(f"config vocab_size={cfg.vocab_size} != tokenizer vocab_size={tok.vocab_size}")
    batcher = Batcher(params, cfg, scfg, dtype)
    if warmup:
        batcher.warmup()
    token_limit = min(scfg.max_tokens_limit or cfg.block_size, cfg.block_size)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="jaxsys microgpt", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.type), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return JSONResponse(error_body(422, str(exc.errors())), 422)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}", None, "server_error"), 500)

    def sampling(body, default_temperature, default_seed):
        temperature = float(_get(body, "temperature", (int, float), default_temperature, 0, 100))
        seed = _get(body, "seed", int, default_seed, 0, 2**63 - 1)
        if seed is None:
            seed = secrets.randbits(63)
        return temperature, seed

    def chat_prompt(messages) -> list[int]:
        if not tok.chat:
            raise ApiError(
                400, "this model has no chat tokens (trained without --chat); use /microgpt/v1/generate", "messages"
            )
        try:
            return chatlib.build_chat_prompt(tok, messages, cfg.block_size).ids
        except DataError as e:
            raise ApiError(400, str(e), "messages") from None

    def budget(body, key, prompt_len) -> int:
        n = _get(body, key, int, token_limit, 1, token_limit)
        return min(n, room(cfg, prompt_len))

    async def run_rows(prompt, n, max_new, temperature, seed, stop_ids, collect=_collect):
        rows = [batcher.submit(prompt, max_new, temperature, seed + i, stop_ids) for i in range(n)]
        try:
            return await asyncio.gather(*(collect(r) for r in rows))
        finally:
            for r in rows:
                r.cancelled = True  # a no-op for finished rows; frees the slot if the client left

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "model": scfg.model_name,
            "chat": tok.chat,
            "block_size": cfg.block_size,
            "max_batch": scfg.max_batch,
            "active": batcher.active(),
            "queued": batcher.queued(),
            "chunks": batcher.steps,
            "max_active": batcher.max_active,
            "rows_decoded": batcher.rows_decoded,
            "chunk_seconds": batcher.chunk_seconds,
        }

    @app.post("/microgpt/v1/generate")
    async def generate(request: Request):
        body = await read_json(request, scfg.max_body_bytes)
        n = _get(body, "num_samples", int, 1, 1, scfg.max_num_samples)
        temperature, seed = sampling(body, 0.5, 42)
        text = _get(body, "prompt", str, "")
        prompt = [tok.bos, *tok.encode(text)]
        if len(prompt) > cfg.block_size:
            raise ApiError(400, f"prompt of {len(prompt)} tokens does not fit in block_size {cfg.block_size}", "prompt")
        max_new = budget(body, "max_tokens", len(prompt))
        stop = [tok.bos] + ([tok.end_turn] if tok.chat else [])
        outs = await run_rows(prompt, n, max_new, temperature, seed, stop)
        return {"samples": [text + tok.decode(t) for t, _ in outs]}

    @app.post("/microgpt/v1/chat")
    async def chat(request: Request):
        body = await read_json(request, scfg.max_body_bytes)
        if "messages" not in body:
            raise ApiError(400, "missing 'messages'", "messages")
        temperature, seed = sampling(body, 0.5, 42)
        prompt = chat_prompt(body["messages"])
        max_new = budget(body, "max_tokens", len(prompt))
        [(ids, reason)] = await run_rows(prompt, 1, max_new, temperature, seed, chatlib.chat_stop_ids(tok))
        return {"role": "assistant", "content": tok.decode(ids), "finish_reason": reason}

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": scfg.model_name, "object": "model", "created": created, "owned_by": "jaxsys"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, scfg.max_body_bytes)
        model = _get(body, "model", str, scfg.model_name)
        if model != scfg.model_name:
            raise ApiError(
                404,
                f"the model {model!r} does not exist; this server has {scfg.model_name!r}",
                "model",
                "model_not_found",
            )
        if "messages" not in body:
            raise ApiError(400, "missing 'messages'", "messages")
        stops = _stop_sequences(body)
        messages = _openai_messages(body["messages"])
        stream = _get_bool(body, "stream", False)
        n = _get(body, "n", int, 1, 1, scfg.max_num_samples)
        temperature, seed = sampling(body, 1.0, None)
        prompt = chat_prompt(messages)
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_new = budget(body, key, len(prompt))
        stop = chatlib.chat_stop_ids(tok)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        if not stream:
            outs = await run_rows(
                prompt, n, max_new, temperature, seed, stop, collect=lambda r: _collect_text(r, tok, stops)
            )
            completion = sum(u for _, u, _ in outs)
            return {
                "id": cid,
                "object": "chat.completion",
                "created": now,
                "model": scfg.model_name,
                "system_fingerprint": None,
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None, "finish_reason": r}
                    for i, (t, _, r) in enumerate(outs)
                ],
                "usage": {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": completion,
                    "total_tokens": len(prompt) * n + completion,
                },
            }
        if n != 1:
            raise ApiError(400, "streaming supports n = 1 only", "n")
        row = batcher.submit(prompt, max_new, temperature, seed, stop)

        def chunk(delta: dict, finish=None) -> str:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": now,
                "model": scfg.model_name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return f"data: {json.dumps(obj)}\n\n"

        async def events():
            st = StopText(stops)
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, val = await row.events.get()
                    if kind == "tokens":
                        text, _ = _feed_tokens(st, tok, val)
                        if text:
                            yield chunk({"content": text})
                        if st.hit:
                            yield chunk({}, "stop")
                            break
                    elif isinstance(val, Exception):
                        err = error_body(500, f"generation failed: {val}", None, "server_error")
                        yield f"data: {json.dumps(err)}\n\n"
                        break
                    else:
                        if text := st.flush():
                            yield chunk({"content": text})
                        yield chunk({}, val)
                        break
                yield "data: [DONE]\n\n"
            finally:
                row.cancelled = True

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _stop_sequences(body) -> tuple[str, ...]:
    """The OpenAI `stop` field: null, a string or a list of up to 4 non-empty strings."""
    v = body.get("stop")
    if v is None or v == "":
        return ()
    seqs = [v] if isinstance(v, str) else v
    if not isinstance(seqs, list) or not all(isinstance(x, str) for x in seqs):
        raise ApiError(400, f"'stop' must be a string or a list of strings, got {type(v).__name__}", "stop")
    if len(seqs) > MAX_STOP_SEQUENCES:
        raise ApiError(400, f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences, got {len(seqs)}", "stop")
    for x in seqs:
        if not x or len(x) > MAX_STOP_CHARS:
            raise ApiError(
                400, f"every 'stop' sequence must have 1 to {MAX_STOP_CHARS} characters, got {len(x)}", "stop"
            )
    return tuple(seqs)


def _get_bool(body, key, default):  # _get rejects bools, so booleans are checked here
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(400, f"'{key}' must be a boolean, got {type(v).__name__}", key)
    return v


# ---------------------------------------------------------------------------------------------
# running


def loopback_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound listening TCP socket (port 0: a free port chosen by the OS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class ServerThread:
    """uvicorn serving `app` on a loopback socket in a background thread (tests, benchmarks)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.sock = loopback_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 60:
                raise RuntimeError("the server thread did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def serve(params, cfg: GPTConfig, tok: Tokenizer, host: str, port: int, scfg: ServeConfig | None = None) -> None:
    """Serve until interrupted (uvicorn.run)."""
    import uvicorn

    app = create_app(params, cfg, tok, scfg)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=30)
