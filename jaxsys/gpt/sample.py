"""Sampling whole documents (e.g. names) from a trained model with the float64 inference model.

Sample i uses seed `seed + i`, so a list of samples is reproducible and each sample can be
regenerated on its own.
"""

import numpy as np

from jaxsys.errors import ConfigError
from jaxsys.gpt.inference import InferenceModel


def sample_texts(
    params: dict,
    cfg,
    tok,
    num: int = 10,
    temperature: float = 0.5,
    seed: int = 42,
    prompt: str = "",
    max_new_tokens: int | None = None,
) -> list[str]:
    """`num` texts generated from `prompt`.

    Plain model: starts from [BOS, prompt chars...] and stops at BOS; the prompt is included in
    the text. Chat model: `prompt` is the user turn; returns the assistant replies (stop at end_turn).
    """
    if num < 0:
        raise ConfigError(f"num must be >= 0, got {num}")
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    m = InferenceModel({k: np.asarray(v, np.float64) for k, v in params.items()}, cfg, tok)
    if tok.chat:
        if not prompt:
            raise ConfigError("a chat model needs a prompt (the user turn)")
        ids = [tok.bos, tok.user, *tok.encode_known(prompt, "--prompt"), tok.end_turn, tok.assistant]
        head = ""
    else:
        ids = [tok.bos, *tok.encode_known(prompt, "--prompt")]
        head = tok.decode(ids)
    room = cfg.block_size - len(ids)
    if room < 1:
        raise ConfigError(f"prompt of {len(ids)} tokens leaves no room in block_size={cfg.block_size}")
    n_new = room if max_new_tokens is None else min(max_new_tokens, room)
    out = []
    for i in range(num):
        new = m.generate_from_prompt(ids, n_new, temperature=temperature, seed=seed + i, greedy=temperature == 0)
        out.append(head + tok.decode(new))
    return out
