"""The FastAPI app: routes of both protocols, /healthz, the chat page at /, and the one place where
an exception becomes a JSON error body (`ErrorMiddleware`)."""

from __future__ import annotations

import contextlib
import importlib.resources
import logging

import jax.numpy as jnp
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from jaxsys.errors import JaxsysError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.serve import native, openai_api
from jaxsys.gpt.serve.protocol import ApiError, AsciiJSONResponse, ServeConfig, error_response
from jaxsys.gpt.serve.service import Service
from jaxsys.gpt.tokenizer import Tokenizer

log = logging.getLogger("jaxsys.gpt.serve")


def error_for(exc: Exception) -> ApiError:
    """The HTTP error of an exception that escaped a route: its own status for an ApiError, 400 for
    a JaxsysError (bad input found deeper down), 500 for anything else (named, never a traceback)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, JaxsysError):
        return ApiError(400, str(exc))
    return ApiError(500, f"internal error: {type(exc).__name__}", type_="server_error")


class ErrorMiddleware:
    """Turns any exception from the app into a JSON error body (when no response has started) and at
    most one log line: nothing is re-raised, so uvicorn logs no traceback and keeps the connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except ClientDisconnect:
            log.info("%s %s: the client left before sending its request body", scope["method"], scope["path"])
        except Exception as exc:
            err = error_for(exc)
            if err.status >= 500:
                log.error("%s %s: %s: %s", scope["method"], scope["path"], type(exc).__name__, exc)
            if started:
                return  # a stream already under way ends here; its client sees the connection close
            with contextlib.suppress(Exception):  # the client may be gone
                await error_response(err)(scope, receive, send)


def healthz(svc: Service) -> dict:
    b = svc.batcher
    return {
        "status": "ok",
        "model": svc.scfg.model_name,
        "chat": svc.tok.chat,
        "block_size": svc.cfg.block_size,
        "max_batch": svc.scfg.max_batch,
        "active": b.active(),
        "queued": b.queued(),
        "chunks": b.steps,
        "max_active": b.max_active,
        "rows_decoded": b.rows_decoded,
        "chunk_seconds": b.chunk_seconds,
    }


def chat_page() -> str:
    """The chat page (package data: jaxsys/gpt/static/chat.html; no build step, no outside files)."""
    return importlib.resources.files("jaxsys.gpt").joinpath("static/chat.html").read_text("utf-8")


def create_app(
    params, cfg: GPTConfig, tok: Tokenizer, scfg: ServeConfig | None = None, dtype=jnp.float32, warmup: bool = True
) -> FastAPI:
    """The FastAPI app serving one model; its batcher starts with the app (lifespan)."""
    svc = Service(params, cfg, tok, scfg or ServeConfig(), dtype)
    if warmup:
        svc.batcher.warmup()
    page = chat_page()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        svc.batcher.start()
        yield
        await svc.batcher.stop()

    app = FastAPI(title="jaxsys microgpt", lifespan=lifespan, default_response_class=AsciiJSONResponse)
    app.state.batcher = svc.batcher
    app.add_middleware(ErrorMiddleware)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return error_response(ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return error_response(ApiError(422, str(exc.errors())))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def _page():
        return HTMLResponse(page)

    @app.get("/healthz")
    async def _healthz():
        return healthz(svc)

    native.add_routes(app, svc)
    openai_api.add_routes(app, svc)
    return app
