"""The auto-decoder MLP: u = [z | enc(x, y)] -> tanh hidden layers -> linear head -> y.

Params pytree `{"W": [W_0, ..., W_L], "b": [b_0, ..., b_L]}` with W_l stored [out, in] (w_OxI), the
latent table `Z [num_shapes, d]`. The network predicts the clipped, scaled SDF
t = clip(sdf / beta, -1, 1); the predicted SDF is beta * y.

Per-sample loss (sample with shape index s, latent z = Z[s]):

    L = 0.5 (y - t)^2 + 0.5 lambda_z |z|^2  (+ 0.5 lambda_W sum_l |W_l|^2 when lambda_W > 0)

Hand-derived gradient of L (a_0 = u, a_{l+1} = tanh(W_l a_l + b_l), y = W_L a_L + b_L):

    delta_L = y - t
    dW_l = delta_l a_l^T (+ lambda_W W_l),  db_l = delta_l
    g_l = W_l^T delta_l,  delta_{l-1} = g_l * (1 - a_l^2)      (l >= 1)
    dL/du = g_0 = W_0^T delta_0,  dL/dz = dL/du[0:d] + lambda_z z
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.errors import ConfigError, ShapeError
from jaxsys.nn.fourier import fourier_dim, fourier_features


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 16  # d, size of each shape's latent z
    num_freqs: int = 6  # K, Fourier frequencies 2^k 2 pi, k = 0..K-1
    hidden: tuple = (64, 64, 64)  # widths of the tanh hidden layers
    include_input: bool = True  # raw (x, y) in the encoding before the sin/cos features
    dtype: str = "float32"  # parameter / compute dtype ("float32" or "float64")

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))  # a list from config.json: hashable again
        if self.latent_dim < 1:
            raise ConfigError(f"ModelConfig.latent_dim must be >= 1, got {self.latent_dim}")
        if self.num_freqs < 0:
            raise ConfigError(f"ModelConfig.num_freqs must be >= 0, got {self.num_freqs}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"ModelConfig.hidden must be non-empty positive widths, got {self.hidden}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"ModelConfig.dtype must be float32 or float64, got {self.dtype!r}")
        if self.enc_dim < 1:
            raise ConfigError("ModelConfig: the encoding is empty (num_freqs=0 and no raw input)")

    @property
    def enc_dim(self) -> int:
        return fourier_dim(2, self.num_freqs, self.include_input)

    @property
    def in_dim(self) -> int:
        return self.latent_dim + self.enc_dim

    @property
    def widths(self) -> tuple:
        return (self.in_dim, *self.hidden, 1)

    @property
    def jdtype(self):
        return jnp.dtype(self.dtype)


def init_params(key: jax.Array, cfg: ModelConfig) -> dict:
    """Hidden W ~ N(0, 1) / sqrt(fan_in), head W ~ 0.5 N(0, 1) / sqrt(fan_in), b = 0."""
    w = cfg.widths
    keys = jax.random.split(key, len(w) - 1)
    Ws, bs = [], []
    for l, k in enumerate(keys):
        scale = (0.5 if l == len(w) - 2 else 1.0) / jnp.sqrt(w[l])
        Ws.append(scale * jax.random.normal(k, (w[l + 1], w[l]), cfg.jdtype))
        bs.append(jnp.zeros((w[l + 1],), cfg.jdtype))
    return {"W": Ws, "b": bs}


def init_latents(key: jax.Array, num_shapes: int, cfg: ModelConfig, std: float = 0.01) -> jax.Array:
    """Z ~ N(0, std^2), [num_shapes, d]."""
    return std * jax.random.normal(key, (num_shapes, cfg.latent_dim), cfg.jdtype)


def encode(p: jax.Array, cfg: ModelConfig) -> jax.Array:
    """[x, y, sin(2^k 2pi x), cos(2^k 2pi x), sin(2^k 2pi y), cos(2^k 2pi y) for k < K]."""
    return fourier_features(p, cfg.num_freqs, cfg.include_input)


def check_params(params: dict, Z: jax.Array, cfg: ModelConfig) -> None:
    """ShapeError when params / latents do not match cfg (call before jit tracing)."""
    w = cfg.widths
    if len(params["W"]) != len(w) - 1 or len(params["b"]) != len(w) - 1:
        raise ShapeError(f"params have {len(params['W'])} layers, config expects {len(w) - 1}")
    for l, (W, b) in enumerate(zip(params["W"], params["b"])):
        if W.shape[-2:] != (w[l + 1], w[l]) or b.shape[-1:] != (w[l + 1],):
            raise ShapeError(f"layer {l}: W {W.shape} / b {b.shape}, expected ({w[l + 1]}, {w[l]}) / ({w[l + 1]},)")
    if Z.shape[-1] != cfg.latent_dim:
        raise ShapeError(
            f"latent dim mismatch: Z has trailing size {Z.shape[-1]}, model expects latent_dim={cfg.latent_dim}"
        )


class Cache(NamedTuple):
    acts: list  # [a_0 = u, a_1, ..., a_L] inputs of each layer, rows = samples


def forward(params: dict, u_BxI: jax.Array) -> tuple[jax.Array, Cache]:
    """y_B for inputs u [B, I] (or [I] for one sample -> scalar y)."""
    acts = [u_BxI]
    a = u_BxI
    L = len(params["W"])
    for l in range(L):
        h = a @ params["W"][l].T + params["b"][l]
        if l < L - 1:
            a = jnp.tanh(h)
            acts.append(a)
        else:
            y = h[..., 0]
    return y, Cache(acts)


def backward(params: dict, cache: Cache, dy_B: jax.Array) -> tuple[dict, jax.Array]:
    """Batched backward of `forward` (sums over samples): dW_l = D_l^T A_l, db_l = sum D_l,
    D_{l-1} = (D_l W_l) * (1 - A_l^2); returns (dparams, du [B, I])."""
    L = len(params["W"])
    d = dy_B[..., None]
    dW, db = [None] * L, [None] * L
    for l in reversed(range(L)):
        a = cache.acts[l]
        dW[l] = jnp.einsum("...o,...i->oi", d, a)
        db[l] = d.reshape(-1, d.shape[-1]).sum(0)
        g = d @ params["W"][l]
        d = g * (1 - a * a) if l > 0 else g
    return {"W": dW, "b": db}, d


def predict(params: dict, z_BxD: jax.Array, enc_BxE: jax.Array) -> jax.Array:
    """y for latents z [..., d] and encodings enc [..., E] (broadcast over leading axes)."""
    z = jnp.broadcast_to(z_BxD, (*enc_BxE.shape[:-1], z_BxD.shape[-1]))
    return forward(params, jnp.concatenate([z, enc_BxE], axis=-1))[0]


def sample_loss(
    params: dict, z: jax.Array, enc: jax.Array, t: jax.Array, lambda_z: float, lambda_w: float = 0.0
) -> jax.Array:
    """Per-sample loss 0.5 (y - t)^2 + 0.5 lambda_z |z|^2 + 0.5 lambda_W sum |W_l|^2."""
    y, _ = forward(params, jnp.concatenate([z, enc]))
    loss = 0.5 * (y - t) ** 2 + 0.5 * lambda_z * jnp.sum(z * z)
    if lambda_w:
        loss = loss + 0.5 * lambda_w * sum(jnp.sum(W * W) for W in params["W"])
    return loss


def sample_grad(
    params: dict, z: jax.Array, enc: jax.Array, t: jax.Array, lambda_z: float, lambda_w: float = 0.0
) -> tuple[dict, jax.Array, jax.Array, jax.Array]:
    """Hand-derived gradient of `sample_loss` for one sample (see the module docstring).

    Returns (dparams, dL/dz, dL/du, loss)."""
    u = jnp.concatenate([z, enc])
    y, cache = forward(params, u)
    delta = jnp.reshape(y - t, (1,))
    L = len(params["W"])
    dW, db = [None] * L, [None] * L
    for l in reversed(range(L)):
        a = cache.acts[l]
        dW[l] = jnp.outer(delta, a) + (lambda_w * params["W"][l] if lambda_w else 0.0)
        db[l] = delta
        g = params["W"][l].T @ delta
        delta = g * (1 - a * a) if l > 0 else g
    du = delta
    dz = du[: z.shape[0]] + lambda_z * z
    loss = 0.5 * (y - t) ** 2 + 0.5 * lambda_z * jnp.sum(z * z)
    if lambda_w:
        loss = loss + 0.5 * lambda_w * sum(jnp.sum(W * W) for W in params["W"])
    return {"W": dW, "b": db}, dz, du, loss
