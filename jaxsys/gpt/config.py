"""GPT configurations: the model (the microgpt architecture: no biases, rmsnorm without gain, ReLU
MLP), the training run, and the static part of the jitted step (`TrainConfig.step_config`)."""

import dataclasses
import math

import jax

from jaxsys.errors import ConfigError
from jaxsys.nn.linear import MATMUL_DTYPES

ENGINES = ("hand", "autodiff")
OPTIMIZERS = ("optax", "hand")
SCHEDULES = ("linear", "cosine", "constant")
DTYPES = ("float32", "float64")


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

    def __post_init__(self) -> None:
        """Raise ConfigError naming the offending field."""
        for name in ("vocab_size", "n_embd", "n_head", "n_layer", "block_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"GPTConfig.{name} must be an int, got {v!r}")
            if v < 1:
                raise ConfigError(f"GPTConfig.{name} must be >= 1, got {v}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps in the whole run (the linear decay reaches 0 here)
    batch_size: int = 32  # sequences per step (B)
    lr: float = 0.01  # peak Adam learning rate
    beta1: float = 0.85  # Adam first-moment decay
    beta2: float = 0.99  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator epsilon
    schedule: str = "linear"  # "linear": lr (1 - step/steps); "cosine": warmup then cosine to min_lr; "constant"
    warmup_steps: int = 0  # linear warm-up steps of the cosine schedule
    min_lr: float = 0.0  # final learning rate of the cosine schedule
    grad_clip: float = 0.0  # clip the global gradient norm to this (0: off)
    engine: str = "hand"  # "hand": hand-derived backward; "autodiff": jax.grad of the same forward
    optimizer: str = "optax"  # "optax": optax.adam; "hand": the hand-written jaxsys.nn.optim.adam
    dtype: str = "float32"  # parameter/compute dtype ("float64" needs jax_enable_x64)
    matmul_dtype: str = "float32"  # "bfloat16": parameter matmuls on bf16 operands, accumulated in dtype
    seed: int = 0  # initialisation and data order
    eval_every: int = 100  # validation loss every N steps (0: only at the end)
    eval_batches: int = 20  # validation batches per evaluation (at most)
    checkpoint_every: int = 0  # orbax checkpoint every N steps (0: only at the end); needs a run dir
    log_every: int = 10  # metrics record + progress refresh every N steps

    def __post_init__(self):
        ints = ("steps", "batch_size", "warmup_steps", "eval_every", "eval_batches", "checkpoint_every", "log_every")
        for name in (*ints, "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"TrainConfig.{name} must be an int, got {v!r}")
        for name in ("steps", "batch_size", "eval_batches", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"TrainConfig.lr must be a positive number, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"Adam decays must lie in [0, 1), got beta1={self.beta1}, beta2={self.beta2}")
        if not self.eps > 0 or self.min_lr < 0 or self.grad_clip < 0:
            raise ConfigError(
                f"need eps > 0, min_lr >= 0, grad_clip >= 0; got eps={self.eps}, "
                f"min_lr={self.min_lr}, grad_clip={self.grad_clip}"
            )
        for name, allowed in (
            ("engine", ENGINES),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("dtype", DTYPES),
            ("matmul_dtype", MATMUL_DTYPES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; expected one of {allowed}")
        if self.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise ConfigError(
                "dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 or jax.config.update('jax_enable_x64', True)"
            )

    def step_config(self, model: GPTConfig) -> "StepConfig":
        """The static part of the jitted step: `model` and this config with the fields the step
        does not read (seed, logging, eval and checkpoint cadence) at their defaults, so that runs
        differing only in those share one compiled step."""
        loop_only = ("seed", "eval_every", "eval_batches", "checkpoint_every", "log_every")
        return StepConfig(model, dataclasses.replace(self, **{f: getattr(TrainConfig, f) for f in loop_only}))


@dataclasses.dataclass(frozen=True)
class StepConfig:
    model: GPTConfig  # the network
    train: TrainConfig  # optimizer, schedule, engine and dtypes (loop-only fields at their defaults)
