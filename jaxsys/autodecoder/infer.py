"""Test-time use of a trained auto-decoder (DeepSDF style).

- `infer_latent`: the decoder is frozen; a new shape's latent starts from N(0, 0.01^2) and is fitted
  with Adam to samples of that shape's SDF, minimising mean_j 0.5 (y_j - t_j)^2 + 0.5 lambda_z |z|^2.
- `interpolate`: decoder outputs along straight lines between latents (for the interpolation grid).
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import optax

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder import recon
from jaxsys.autodecoder.sampler import SamplerConfig, sample
from jaxsys.autodecoder.shapes import get_shape
from jaxsys.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class InferConfig:
    steps: int = 600  # Adam steps on the latent
    batch_size: int = 1024  # samples per step
    lr: float = 5e-3  # Adam learning rate
    lambda_z: float = 1e-4  # latent penalty
    init_std: float = 0.01  # z0 ~ N(0, init_std^2)
    seed: int = 0  # sampling / init seed

    def __post_init__(self):
        for f in ("steps", "batch_size"):
            if getattr(self, f) < 1:
                raise ConfigError(f"InferConfig.{f} must be >= 1, got {getattr(self, f)}")
        if not self.lr > 0:
            raise ConfigError(f"InferConfig.lr must be > 0, got {self.lr}")


@partial(jax.jit, static_argnames=("mcfg", "scfg", "icfg"))
def _fit(params, key, mcfg, scfg, icfg):
    kz, kd = jax.random.split(key)
    z = icfg.init_std * jax.random.normal(kz, (mcfg.latent_dim,), mcfg.jdtype)
    opt = optax.adam(icfg.lr)

    def loss_fn(z, batch):
        y = M.predict(params, z, M.encode(batch.p, mcfg))
        return jnp.mean(0.5 * (y - batch.t) ** 2) + 0.5 * icfg.lambda_z * jnp.sum(z * z)

    def step(carry, i):
        z, st = carry
        batch = sample(jax.random.fold_in(kd, i), icfg.batch_size, scfg, mcfg.jdtype, shape_index=0)
        loss, g = jax.value_and_grad(loss_fn)(z, batch)
        upd, st = opt.update(g, st, z)
        return (optax.apply_updates(z, upd), st), loss

    (z, _), losses = jax.lax.scan(step, (z, opt.init(z)), jnp.arange(icfg.steps))
    return z, losses


def infer_latent(
    params, mcfg: M.ModelConfig, shape: str, icfg: InferConfig = InferConfig(), sampler: SamplerConfig = SamplerConfig()
):
    """Fit a latent for registered shape `shape` with the decoder frozen -> (z [d], losses [steps])."""
    get_shape(shape)
    M.check_params(params, jnp.zeros((1, mcfg.latent_dim)), mcfg)
    scfg = dataclasses.replace(sampler, shapes=(shape,))
    return _fit(params, jax.random.PRNGKey(icfg.seed), mcfg, scfg, icfg)


def interpolate(params, z_a, z_b, mcfg: M.ModelConfig, n: int = 7, res: int = 96) -> jax.Array:
    """[n, res, res] outputs for z = (1 - a) z_a + a z_b, a = linspace(0, 1, n)."""
    if n < 2:
        raise ConfigError(f"interpolation needs n >= 2 steps, got {n}")
    alphas = jnp.linspace(0.0, 1.0, n, dtype=jnp.asarray(z_a).dtype)
    return jnp.stack([recon.render_rows(params, (1 - a) * z_a + a * z_b, mcfg, res) for a in alphas])
