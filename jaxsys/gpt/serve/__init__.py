"""HTTP chat API for a GPT model on FastAPI + uvicorn (`jaxsys gpt serve`).

Endpoints: GET / (a chat page), POST /microgpt/v1/generate, POST /microgpt/v1/chat,
POST /v1/chat/completions (OpenAI compatible, incl. `stream: true` server-sent events and `stop`
sequences), GET /v1/models, GET /healthz, GET /openapi.json. Errors are JSON
`{"error": {"message", "type", "param", "code"}}` (the OpenAI error shape), 4xx for bad requests
(400, 404, 408 for a body not received within `read_timeout_s`, 413, 422), 503 when overloaded; no
request gets a traceback in the log.

Input rules: a `system` message enters the chat format as a user turn; characters outside the
model's vocabulary are a 400 that names them (U+XXXX); temperature 0 (or below 1e-6) is greedy.

Modules: protocol (config, errors, body reading, stop sequences), batcher (the decode batch),
service (one model and the checks every endpoint shares), native and openai_api (the two protocols),
schemas (request bodies in /openapi.json), app (routes, error middleware, chat page), server (uvicorn).
"""

from jaxsys.gpt.serve.app import create_app
from jaxsys.gpt.serve.batcher import Batcher, collect, collect_text
from jaxsys.gpt.serve.protocol import ApiError, ServeConfig, StopText, error_body
from jaxsys.gpt.serve.server import ServerThread, loopback_socket, serve

__all__ = [
    "ApiError",
    "Batcher",
    "ServeConfig",
    "ServerThread",
    "StopText",
    "collect",
    "collect_text",
    "create_app",
    "error_body",
    "loopback_socket",
    "serve",
]
