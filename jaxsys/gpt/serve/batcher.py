"""The decode batcher: every generation is a row that an asyncio task places into a free slot of a
fixed-size decode batch (`ServeConfig.max_batch`); the batch advances `chunk_steps` jitted decode steps
at a time in a worker thread, and between chunks finished rows are answered and queued rows join.
Requests that arrive together are thus decoded in the same jitted steps."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

import jax.numpy as jnp
import numpy as np

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
    to_device_params,
)
from jaxsys.gpt.serve.protocol import ApiError, ServeConfig, StopText, feed_tokens
from jaxsys.gpt.tokenizer import Tokenizer

log = logging.getLogger("jaxsys.gpt.serve")


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
                log.error("decode step failed: %s: %s", type(e).__name__, e)
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


async def collect(row: _Row) -> tuple[list[int], str]:
    tokens: list[int] = []
    while True:
        kind, val = await row.events.get()
        if kind == "tokens":
            tokens.extend(val)
        elif isinstance(val, Exception):
            raise ApiError(500, f"generation failed: {val}", type_="server_error")
        else:
            return tokens, val


async def collect_text(row: _Row, tok: Tokenizer, stops: tuple[str, ...]) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of one row, stopped early at a stop sequence (the
    row is then cancelled, which frees its slot). Completion tokens count the end-of-turn token of a
    row that stopped on it, as the token-list path does."""
    st, parts, used = StopText(stops), [], 0
    while True:
        kind, val = await row.events.get()
        if kind == "tokens":
            text, n = feed_tokens(st, tok, val)
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
