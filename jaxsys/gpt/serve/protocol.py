"""What both HTTP protocols share: the server config, the error shape, reading a bounded JSON body,
field validation, and `stop` sequences."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math

from fastapi.responses import JSONResponse

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.tokenizer import Tokenizer
from jaxsys.train.io import load_json

MAX_STOP_SEQUENCES = 4  # as in the OpenAI API
MAX_STOP_CHARS = 64
BODY_MAX_DEPTH = 16  # nesting of a request body (messages -> content parts is 5)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    model_name: str = "microgpt"  # the id reported by /v1/models and in completions
    max_batch: int = 16  # rows decoded together in one jitted step (static)
    chunk_steps: int = 4  # decode steps per jitted call between batch updates
    max_num_samples: int = 50  # limit of num_samples (/generate) and n (/v1/chat/completions)
    max_tokens_limit: int | None = None  # cap on max_tokens (None: block_size)
    max_body_bytes: int = 256 * 1024  # larger request bodies get 413
    max_queue: int = 4096  # queued rows beyond this get 503
    read_timeout_s: float = 10.0  # a request body not complete by then gets 408

    def __post_init__(self) -> None:
        for name in ("max_batch", "chunk_steps", "max_num_samples", "max_body_bytes", "max_queue"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ServeConfig.{name} must be an int >= 1, got {v!r}")
        v = self.max_tokens_limit
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"ServeConfig.max_tokens_limit must be None or an int >= 1, got {v!r}")
        if not (isinstance(self.read_timeout_s, (int, float)) and 0 < self.read_timeout_s < math.inf):
            raise ConfigError(f"ServeConfig.read_timeout_s must be a positive number, got {self.read_timeout_s!r}")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.type = status, message, param, type_


def error_body(status: int, message: str, param=None, type_="invalid_request_error") -> dict:
    """The OpenAI error shape, used by every endpoint."""
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: any Python string, lone surrogates included, encodes."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(exc: ApiError) -> AsciiJSONResponse:
    return AsciiJSONResponse(error_body(exc.status, exc.message, exc.param, exc.type), exc.status)


async def read_json(request, max_bytes: int, timeout_s: float) -> dict:
    """The request body as a JSON object: 413 beyond max_bytes (checked while reading), 408 if it is
    not complete within timeout_s, 400 if it is not bounded JSON (`jaxsys.train.io.load_json`: no
    5,000-digit numbers, no deep nesting, no NaN)."""
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if n > max_bytes:
            raise ApiError(413, f"request body of {n} bytes exceeds the limit of {max_bytes}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    buf = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise ApiError(408, f"request body not received within {timeout_s:g} s (timed out)") from None
        buf += chunk
        if len(buf) > max_bytes:
            raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes")
    if not buf:
        raise ApiError(400, "empty request body; expected a JSON object")
    try:
        body = load_json(bytes(buf), "request body", max_bytes=max_bytes, max_depth=BODY_MAX_DEPTH)
    except DataError as e:
        msg = str(e).replace("not UTF-8 text", "not valid UTF-8").replace("invalid JSON", "malformed JSON")
        raise ApiError(400, msg) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def get_field(body: dict, key: str, kinds, default, lo=None, hi=None):
    """body[key] checked for type (bools are not numbers) and range; `default` when absent or null."""
    if body.get(key) is None:
        return default
    v = body[key]
    if not isinstance(v, kinds) or isinstance(v, bool):
        names = "/".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ApiError(400, f"'{key}' must be of type {names}, got {type(v).__name__}", key)
    if isinstance(v, float) and not math.isfinite(v):
        raise ApiError(400, f"'{key}' must be finite, got {v}", key)
    if lo is not None and v < lo:
        raise ApiError(400, f"'{key}' must be >= {lo}, got {v}", key)
    if hi is not None and v > hi:
        raise ApiError(400, f"'{key}' must be <= {hi}, got {v}", key)
    return v


def get_bool(body: dict, key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(400, f"'{key}' must be a boolean, got {type(v).__name__}", key)
    return v


def stop_sequences(body: dict) -> tuple[str, ...]:
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


def feed_tokens(st: StopText, tok: Tokenizer, ids: list[int]) -> tuple[str, int]:
    """Feeds ids one at a time; returns (text to emit, ids consumed: all, or through the id that
    completed a stop sequence)."""
    parts = []
    for n, i in enumerate(ids, 1):
        parts.append(st.feed(tok.decode([i])))
        if st.hit:
            return "".join(parts), n
    return "".join(parts), len(ids)
