"""The native protocol: POST /microgpt/v1/generate (plain continuation) and /microgpt/v1/chat."""

from __future__ import annotations

from fastapi import FastAPI, Request

from jaxsys.gpt import chat as chatlib
from jaxsys.gpt.serve.protocol import ApiError, get_field, read_json
from jaxsys.gpt.serve.schemas import CHAT_BODY, GENERATE_BODY, request_body
from jaxsys.gpt.serve.service import Service


async def generate(svc: Service, request: Request) -> dict:
    """{"samples": [prompt + continuation, ...]}: num_samples rows with seeds seed, seed + 1, ..."""
    body = await read_json(request, svc.scfg.max_body_bytes, svc.scfg.read_timeout_s)
    tok, cfg = svc.tok, svc.cfg
    n = get_field(body, "num_samples", int, 1, 1, svc.scfg.max_num_samples)
    temperature, seed = svc.sampling(body, 0.5, 42)
    text = get_field(body, "prompt", str, "")
    prompt = [tok.bos, *svc.text_ids(text, "prompt")]
    if len(prompt) > cfg.block_size:
        raise ApiError(400, f"prompt of {len(prompt)} tokens does not fit in block_size {cfg.block_size}", "prompt")
    max_new = svc.budget(body, "max_tokens", len(prompt))
    stop = [tok.bos] + ([tok.end_turn] if tok.chat else [])
    outs = await svc.run_rows(prompt, n, max_new, temperature, seed, stop)
    return {"samples": [text + tok.decode(t) for t, _ in outs]}


async def chat(svc: Service, request: Request) -> dict:
    """{"role": "assistant", "content", "finish_reason"} for a list of messages."""
    body = await read_json(request, svc.scfg.max_body_bytes, svc.scfg.read_timeout_s)
    if "messages" not in body:
        raise ApiError(400, "missing 'messages'", "messages")
    temperature, seed = svc.sampling(body, 0.5, 42)
    prompt = svc.chat_prompt(body["messages"])
    max_new = svc.budget(body, "max_tokens", len(prompt))
    stop = chatlib.chat_stop_ids(svc.tok)
    [(ids, reason)] = await svc.run_rows(prompt, 1, max_new, temperature, seed, stop)
    return {"role": "assistant", "content": svc.tok.decode(ids), "finish_reason": reason}


def add_routes(app: FastAPI, svc: Service) -> None:
    @app.post("/microgpt/v1/generate", openapi_extra=request_body(GENERATE_BODY))
    async def _generate(request: Request):
        return await generate(svc, request)

    @app.post("/microgpt/v1/chat", openapi_extra=request_body(CHAT_BODY))
    async def _chat(request: Request):
        return await chat(svc, request)
