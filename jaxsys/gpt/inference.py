"""Independent inference model: plain float64 numpy, one token at a time with a KV cache.

It shares nothing with the tensor engine but the file formats (weights.json + meta.json) and the
sampling convention:
  probs = softmax(logits / temperature) in float64; u ~ U[0, 1) (np.random.default_rng(seed).random(),
  one draw per generated token, unless `uniforms` is given); token = min(searchsorted(cumsum(probs),
  u, side="right"), V - 1). Greedy = argmax. Generation stops at BOS (plain) or end_turn (chat).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.tokenizer import Tokenizer

EPS = 1e-5
MIN_TEMPERATURE = 1e-6  # as jaxsys.gpt.generate: argmax below it
EXP_FLOOR = -80.0  # as jaxsys.gpt.generate: exp's argument is clipped here


def _rmsnorm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x) + EPS)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z))
    return e / e.sum()


def sample_token(logits: np.ndarray, temperature: float, u: float | None, greedy: bool = False) -> int:
    """The shared sampling convention (see module docstring and `jaxsys.gpt.generate.sampling_probs`):
    argmax below MIN_TEMPERATURE; otherwise softmax of the max-shifted logits over t, exp clipped."""
    if greedy or not float(temperature) >= MIN_TEMPERATURE:
        return int(np.argmax(logits))
    z = np.asarray(logits, np.float64)
    e = np.exp(np.maximum((z - np.max(z)) / float(temperature), EXP_FLOOR))
    probs = e / e.sum()
    return int(min(np.searchsorted(np.cumsum(probs), u, side="right"), len(probs) - 1))


class InferenceModel:
    """microgpt forward in numpy float64 with a per-layer KV cache."""

    def __init__(self, params: dict, cfg: GPTConfig, tok: Tokenizer | None = None):
        self.cfg, self.tok = cfg, tok
        self.p = {k: np.asarray(v, np.float64) for k, v in params.items()}
        if tok is not None and tok.vocab_size != cfg.vocab_size:
            raise ConfigError(f"tokenizer vocab_size={tok.vocab_size} != config vocab_size={cfg.vocab_size}")
        self.reset()

    @classmethod
    def from_dir(cls, model_dir) -> "InferenceModel":
        from jaxsys.gpt.weights_io import load_model

        params, cfg, tok = load_model(Path(model_dir))
        return cls(params, cfg, tok)

    def reset(self) -> None:
        """Empty the KV cache (position 0 next)."""
        self.keys = [[] for _ in range(self.cfg.n_layer)]
        self.values = [[] for _ in range(self.cfg.n_layer)]
        self.pos = 0

    def step(self, token_id: int) -> np.ndarray:
        """Feed one token at the next position; returns the [V] logits for the following token."""
        cfg, p = self.cfg, self.p
        if self.pos >= cfg.block_size:
            raise ConfigError(f"context full: position {self.pos} >= block_size={cfg.block_size}")
        if not 0 <= int(token_id) < cfg.vocab_size:
            raise DataError(f"token id {token_id} outside [0, {cfg.vocab_size})")
        hd, nh = cfg.head_dim, cfg.n_head
        x = _rmsnorm(p["wte"][int(token_id)] + p["wpe"][self.pos])
        for li in range(cfg.n_layer):
            pre = f"layer{li}."
            h = _rmsnorm(x)
            q = p[pre + "attn_wq"] @ h
            self.keys[li].append(p[pre + "attn_wk"] @ h)
            self.values[li].append(p[pre + "attn_wv"] @ h)
            k_all = np.stack(self.keys[li])  # [t, E]
            v_all = np.stack(self.values[li])
            out = np.empty(cfg.n_embd)
            for hh in range(nh):
                sl = slice(hh * hd, (hh + 1) * hd)
                w = _softmax(k_all[:, sl] @ q[sl] / np.sqrt(hd))
                out[sl] = w @ v_all[:, sl]
            x = x + p[pre + "attn_wo"] @ out
            h = _rmsnorm(x)
            x = x + p[pre + "mlp_fc2"] @ np.maximum(p[pre + "mlp_fc1"] @ h, 0.0)
        self.pos += 1
        return p["lm_head"] @ x

    def logits_for_next(self, token_ids: Sequence[int]) -> np.ndarray:
        """Reset, feed `token_ids`, return the logits after the last one."""
        ids = list(token_ids)
        if not ids:
            raise DataError("logits_for_next needs at least one token")
        self._check_prompt(ids)
        self.reset()
        for t in ids:
            logits = self.step(t)
        return logits

    def sequence_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """[T, V] logits at every position of `token_ids` (fresh cache)."""
        self._check_prompt(list(token_ids))
        self.reset()
        return np.stack([self.step(t) for t in token_ids])

    def _check_prompt(self, ids: list) -> None:
        if len(ids) > self.cfg.block_size:
            raise ConfigError(f"prompt of {len(ids)} tokens is longer than block_size={self.cfg.block_size}")

    def default_stop_ids(self) -> list[int]:
        if self.tok is None:
            return []
        return [self.tok.end_turn] if self.tok.chat else [self.tok.bos]

    def generate_from_prompt(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.5,
        seed: int = 42,
        stop_ids=None,
        uniforms: Sequence[float] | None = None,
        greedy: bool = False,
    ) -> list[int]:
        """Sample up to `max_new_tokens` tokens after `prompt_ids` (stop token not included).

        Stops early at a stop id (default BOS in plain mode, end_turn in chat mode) or once the
        context holds block_size tokens (the token sampled from that last position is still
        returned, as in microgpt: prompt + generated <= block_size + 1). Returns the generated ids.
        """
        prompt = list(prompt_ids)
        if not prompt:
            raise DataError("generate_from_prompt needs a non-empty prompt (e.g. [BOS])")
        if not greedy and not (temperature > 0):
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self._check_prompt(prompt)
        stop = set(self.default_stop_ids() if stop_ids is None else stop_ids)
        rng = np.random.default_rng(seed) if uniforms is None else None
        self.reset()
        for t in prompt[:-1]:
            self.step(t)
        logits = self.step(prompt[-1])
        out = []
        for i in range(int(max_new_tokens)):
            if greedy:
                u = None
            elif uniforms is not None:
                if i >= len(uniforms):
                    raise DataError(f"uniforms has {len(uniforms)} values but step {i} needs one")
                u = float(uniforms[i])
            else:
                u = rng.random()
            nxt = sample_token(logits, temperature, u, greedy)
            if nxt in stop:
                break
            out.append(nxt)
            if self.pos >= self.cfg.block_size:
                break
            logits = self.step(nxt)
        return out
