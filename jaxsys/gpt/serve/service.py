"""One served model: its batcher and the request-to-rows steps both protocols share (sampling
settings, prompts, token budgets, running rows)."""

from __future__ import annotations

import asyncio
import secrets

import jax.numpy as jnp

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import chat as chatlib
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.generate import room
from jaxsys.gpt.serve.batcher import Batcher, collect
from jaxsys.gpt.serve.protocol import ApiError, ServeConfig, get_field
from jaxsys.gpt.tokenizer import Tokenizer

MAX_TEMPERATURE = 100.0
MAX_SEED = 2**63 - 1


class Service:
    """A model, its tokenizer and its batcher, with the checks every endpoint applies."""

    def __init__(self, params, cfg: GPTConfig, tok: Tokenizer, scfg: ServeConfig, dtype=jnp.float32):
        self.scfg = scfg
        if cfg.vocab_size != tok.vocab_size:
            raise ConfigError(f"config vocab_size={cfg.vocab_size} != tokenizer vocab_size={tok.vocab_size}")
        self.cfg, self.tok = cfg, tok
        self.batcher = Batcher(params, cfg, scfg, dtype)
        self.token_limit = min(scfg.max_tokens_limit or cfg.block_size, cfg.block_size)

    def sampling(self, body: dict, default_temperature: float, default_seed: int | None) -> tuple[float, int]:
        """(temperature, seed): temperature in [0, 100] (below 1e-6: greedy); seed random if unset."""
        temperature = float(get_field(body, "temperature", (int, float), default_temperature, 0, MAX_TEMPERATURE))
        seed = get_field(body, "seed", int, default_seed, 0, MAX_SEED)
        return temperature, secrets.randbits(63) if seed is None else seed

    def text_ids(self, text: str, where: str) -> list[int]:
        """Ids of `text`; characters outside the vocabulary are a 400 naming them."""
        try:
            return self.tok.encode_known(text, where)
        except DataError as e:
            raise ApiError(400, str(e), where) from None

    def chat_prompt(self, messages) -> list[int]:
        """The prompt of the next assistant turn (`system` messages enter as user turns)."""
        if not self.tok.chat:
            raise ApiError(
                400,
                "this model has no chat tokens (trained without --mode chat); use /microgpt/v1/generate",
                "messages",
            )
        try:
            return chatlib.build_chat_prompt(self.tok, messages, self.cfg.block_size).ids
        except DataError as e:
            raise ApiError(400, str(e), "messages") from None

    def budget(self, body: dict, key: str, prompt_len: int) -> int:
        n = get_field(body, key, int, self.token_limit, 1, self.token_limit)
        return min(n, room(self.cfg, prompt_len))

    async def run_rows(self, prompt, n, max_new, temperature, seed, stop_ids, collect_fn=collect) -> list:
        """n rows of one prompt (seeds seed, seed + 1, ...), each collected by collect_fn."""
        rows = [self.batcher.submit(prompt, max_new, temperature, seed + i, stop_ids) for i in range(n)]
        try:
            return await asyncio.gather(*(collect_fn(r) for r in rows))
        finally:
            for r in rows:
                r.cancelled = True  # a no-op for finished rows; frees the slot if the client left
