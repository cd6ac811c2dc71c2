"""Adam two ways: written out by hand as an optax-style (init_fn, update_fn) pair (shared, in
`jaxsys.nn.optim`), and optax.adam.

The hand version follows Algorithm 1 of Kingma & Ba (2015), "Adam: a method for stochastic
optimization", with g the gradient at step t = 1, 2, ...:

    m_t = b1 m_{t-1} + (1 - b1) g
    v_t = b2 v_{t-1} + (1 - b2) g^2
    m^_t = m_t / (1 - b1^t)
    v^_t = v_t / (1 - b2^t)
    update = -lr m^_t / (sqrt(v^_t) + eps)          (params_t = params_{t-1} + update)
"""

import dataclasses

import optax

from jaxsys.errors import ConfigError
from jaxsys.nn.optim import AdamState, adam  # noqa: F401  (re-exported: the hand Adam)

OPTIMIZERS = ("hand", "optax")


@dataclasses.dataclass(frozen=True)
class AdamConfig:
    kind: str = "hand"  # "hand" (this file's adam) or "optax" (optax.adam, production path)
    learning_rate: float = 1e-3  # lr
    b1: float = 0.9  # first-moment decay
    b2: float = 0.999  # second-moment decay
    eps: float = 1e-8  # denominator epsilon

    def __post_init__(self):
        if self.kind not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.kind!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"Adam decays must lie in [0, 1), got b1={self.b1}, b2={self.b2}")


def make_optimizer(cfg: AdamConfig) -> optax.GradientTransformation:
    """The hand Adam or optax.adam with the same hyper-parameters."""
    if cfg.kind == "hand":
        return adam(cfg.learning_rate, cfg.b1, cfg.b2, cfg.eps)
    return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
