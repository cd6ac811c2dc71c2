"""GPT model configuration (the microgpt architecture: no biases, rmsnorm without gain, ReLU MLP)."""

import dataclasses

from jaxsys.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    vocab_size: int  # number of token ids (characters + special tokens)
    n_embd: int = 128  # embedding width E
    n_head: int = 4  # attention heads; head_dim = n_embd / n_head
    n_layer: int = 6  # transformer blocks
    block_size: int = 512  # maximum sequence length (rows of wpe)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> "GPTConfig":
        """Raise ConfigError naming the offending field; returns self so calls can chain."""
        for name in ("vocab_size", "n_embd", "n_head", "n_layer", "block_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"GPTConfig.{name} must be an int, got {v!r}")
            if v < 1:
                raise ConfigError(f"GPTConfig.{name} must be >= 1, got {v}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
