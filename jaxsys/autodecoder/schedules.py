"""Three training schedules on the same params pytree {W[l], b[l]} and latent table Z [S, d].

All are pure functions `update(params, Z, opt, batch, mcfg, hcfg) -> (params, Z, opt, loss_B)`
(`opt` is the optax state for `batched`, an empty tuple otherwise), traced inside the jitted burst
of `train.py`. Notation: a_0 = u = [z | enc], a_{l+1} = tanh(W_l a_l + b_l), y = W_L a_L + b_L,
r = y - t, lr_w / lr_z the learning rates, lambda_z / lambda_w the penalties, c = 1 - lr_w lambda_w.

strict
    For j = 0..B-1 in order (`lax.scan`): forward sample j with the *current* W, b and z = Z[s_j];
    exact hand-derived per-sample gradient (`model.sample_grad`, all terms from the pre-update
    weights); then SGD on everything sample j touches:
        W_l <- W_l - lr_w (delta_l a_l^T + lambda_w W_l) = c W_l - lr_w delta_l a_l^T
        b_l <- b_l - lr_w delta_l
        Z[s_j] <- Z[s_j] - lr_z (dL/du[0:d] + lambda_z Z[s_j])
    Only the latent of the active shape moves.

microbatch  (the reference C++ sketch's batched rule)
    1. One batched forward for the whole micro-batch with the weights and latents as they are at
       its start: A_l [B, I_l] (a_0 rows contain the latent columns Z[s_j] as of the micro-batch
       start), y [B]. These stored activations are used for every sample below; nothing is
       re-evaluated, even after W, b or Z have moved.
    2. For j = 0..B-1 in order, with delta = r_j = y_j - t_j and then for l = L..0:
           W_l <- c W_l                              (weight decay on the whole matrix; not on b)
           W_l <- W_l - lr_w delta a_{l,j}^T         (rank-1 update from the stored a_{l,j})
           b_l <- b_l - lr_w delta
           g   <- W_l^T delta                        (formed with the just-updated W_l)
           delta <- g * (1 - a_{l,j}^2)              (l >= 1; tanh' from the stored activation)
       dL/du = g of layer 0 (= W_0^T delta_0, also with the updated W_0), and the latent step
           Z[s_j] <- Z[s_j] - lr_z (dL/du[0:d] + lambda_z Z[s_j])   (current table value)
    The C++ sketch hands back layer 0's output delta as dL/du (a bug that feeds a 64-vector's head
    into the 16-dim latent step); here dL/du is W_0^T delta_0 as stated.

    Two implementations of exactly this rule (tests check both against a plain numpy loop):
    `chunk == 1`: the literal per-sample `lax.scan` (`microbatch_scan`).
    `chunk > 1` (default): `microbatch_blocked`, the same sequence of updates regrouped into
    GEMMs. Within a block of samples j0..j0+C-1, with W' the weights at the block start and
    D [C, O], A [C, I] the deltas / inputs of one layer,
        W after sample j  = c^(j-j0+1) W' - lr_w sum_{j0<=i<=j} c^(j-i) delta_i a_i^T
        g_j = W_j^T delta_j = c^(j-j0+1) (D W')_j - lr_w sum_{i<=j} c^(j-i) (delta_i . delta_j) a_i
    i.e. G = cpow * (D W') - lr_w tril((D D^T) * c^(j-i)) A, and after the block
        W = c^C W' - lr_w (c^(C-1-i) D)^T A,  b = b' - lr_w sum_i delta_i.
    Latents do not enter the forward within a micro-batch, so their per-sample sequence
    z <- (1 - lr_z lambda_z) z - lr_z g_j is applied in closed form per shape at the end.
    The results agree with the per-sample loop to float round-off (1e-10 in float64).

batched
    Ordinary mini-batch gradient of the mean per-sample loss (hand-derived batched backward),
    applied with an optax optimizer (Adam, lr `batched_lr`) to {params, Z}.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder.sampler import Batch
from jaxsys.errors import ConfigError

SCHEDULES = ("strict", "microbatch", "batched")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    name: str = "microbatch"  # strict | microbatch | batched
    lr_w: float = 3e-4  # SGD learning rate of W, b (strict, microbatch)
    lr_z: float = 1e-3  # SGD learning rate of the latents (strict, microbatch)
    lambda_z: float = 1e-4  # latent penalty 0.5 lambda_z |z|^2 per sample
    lambda_w: float = 1e-6  # weight decay 0.5 lambda_w |W|^2 per sample (0 disables)
    batched_lr: float = 1e-3  # Adam learning rate of the batched schedule
    chunk: int = 32  # microbatch: samples per GEMM block (1 = literal per-sample scan)
    unroll: int = 1  # lax.scan unroll of the per-sample loops (strict, chunk == 1)

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.name!r}; choose one of {SCHEDULES}")
        for f in ("lr_w", "lr_z", "batched_lr"):
            if not getattr(self, f) > 0:
                raise ConfigError(f"ScheduleConfig.{f} must be > 0, got {getattr(self, f)}")
        for f in ("lambda_z", "lambda_w"):
            if getattr(self, f) < 0:
                raise ConfigError(f"ScheduleConfig.{f} must be >= 0, got {getattr(self, f)}")
        if self.chunk < 1 or self.unroll < 1:
            raise ConfigError(f"ScheduleConfig.chunk and unroll must be >= 1, got {self.chunk}, {self.unroll}")


def _batch_inputs(Z, batch: Batch, mcfg: M.ModelConfig):
    enc = M.encode(batch.p.astype(Z.dtype), mcfg)
    return jnp.concatenate([Z[batch.s], enc], axis=-1), enc


def _latent_closed_form(Z, s, gz, lr_z, lambda_z):
    """Z after the per-sample steps Z[s_j] <- (1 - lr_z lambda_z) Z[s_j] - lr_z gz_j, j = 0..B-1."""
    S = Z.shape[0]
    onehot = jax.nn.one_hot(s, S, dtype=Z.dtype)  # [B, S]
    n = onehot.sum(0)  # [S]
    cz = 1.0 - lr_z * lambda_z
    if lambda_z:
        later = jnp.sum((jnp.cumsum(onehot[::-1], 0)[::-1] - onehot) * onehot, -1)  # [B]
        gz = gz * (cz**later)[:, None]
        Z = Z * (cz**n)[:, None]
    return Z - lr_z * (onehot.T @ gz)


def microbatch_scan(params, Z, batch: Batch, mcfg: M.ModelConfig, hcfg: ScheduleConfig):
    """The reference micro-batch rule, literally: batched forward, then `lax.scan` over samples."""
    u, _ = _batch_inputs(Z, batch, mcfg)
    y, cache = M.forward(params, u)
    r = y - batch.t
    loss = 0.5 * r * r + 0.5 * hcfg.lambda_z * jnp.sum(u[:, : mcfg.latent_dim] ** 2, -1)
    L = len(params["W"])
    c = 1.0 - hcfg.lr_w * hcfg.lambda_w
    d = mcfg.latent_dim

    def body(carry, x):
        Ws, bs, Zc = carry
        acts, rj, sj = x
        Ws, bs = list(Ws), list(bs)
        delta = rj[None]
        for l in reversed(range(L)):
            a = acts[l]
            W = c * Ws[l] if hcfg.lambda_w else Ws[l]
            W = W - hcfg.lr_w * jnp.outer(delta, a)
            bs[l] = bs[l] - hcfg.lr_w * delta
            Ws[l] = W
            g = W.T @ delta
            delta = g * (1 - a * a) if l > 0 else g
        z = Zc[sj]
        Zc = Zc.at[sj].set(z - hcfg.lr_z * (delta[:d] + hcfg.lambda_z * z))
        return (Ws, bs, Zc), None

    (Ws, bs, Z), _ = jax.lax.scan(body, (params["W"], params["b"], Z), (cache.acts, r, batch.s), unroll=hcfg.unroll)
    return {"W": Ws, "b": bs}, Z, loss


def microbatch_blocked(params, Z, batch: Batch, mcfg: M.ModelConfig, hcfg: ScheduleConfig):
    """The same rule as `microbatch_scan`, regrouped into GEMMs over blocks of `hcfg.chunk`
    samples (see the module docstring for the algebra)."""
    u, _ = _batch_inputs(Z, batch, mcfg)
    y, cache = M.forward(params, u)
    r = y - batch.t
    loss = 0.5 * r * r + 0.5 * hcfg.lambda_z * jnp.sum(u[:, : mcfg.latent_dim] ** 2, -1)
    B = r.shape[0]
    C = math.gcd(B, hcfg.chunk)
    nC = B // C
    L = len(params["W"])
    lr = hcfg.lr_w
    dt = Z.dtype
    tri = jnp.tril(jnp.ones((C, C), dt))
    if hcfg.lambda_w:
        c = 1.0 - lr * hcfg.lambda_w
        idx = jnp.arange(C, dtype=dt)
        decay = tri * c ** jnp.maximum(idx[:, None] - idx[None, :], 0)  # c^(j-i), i <= j
        cpow = (c ** (idx + 1))[:, None]
        tail = (c ** (C - 1 - idx))[:, None]
        cC = c**C
    else:
        decay = tri

    def block(carry, x):
        Ws, bs = list(carry[0]), list(carry[1])
        acts, rc = x
        D = rc[:, None]  # [C, 1]
        for l in reversed(range(L)):
            A = acts[l]  # [C, I]
            W0 = Ws[l]
            DW = D @ W0
            Mt = (D @ D.T) * decay
            if hcfg.lambda_w:
                G = cpow * DW - lr * (Mt @ A)
                Ws[l] = cC * W0 - lr * ((tail * D).T @ A)
            else:
                G = DW - lr * (Mt @ A)
                Ws[l] = W0 - lr * (D.T @ A)
            bs[l] = bs[l] - lr * jnp.sum(D, 0)
            D = G * (1 - A * A) if l > 0 else G
        return (Ws, bs), D

    acts = [a.reshape(nC, C, a.shape[-1]) for a in cache.acts]
    if nC == 1:
        (Ws, bs), du = block((params["W"], params["b"]), ([a[0] for a in acts], r))
    else:
        (Ws, bs), du = jax.lax.scan(block, (params["W"], params["b"]), (acts, r.reshape(nC, C)))
    du = du.reshape(B, -1)
    Z = _latent_closed_form(Z, batch.s, du[:, : mcfg.latent_dim], hcfg.lr_z, hcfg.lambda_z)
    return {"W": Ws, "b": bs}, Z, loss


def strict_update(params, Z, batch: Batch, mcfg: M.ModelConfig, hcfg: ScheduleConfig):
    """Per-sample exact SGD (see module docstring), `lax.scan` over the samples in order."""
    enc = M.encode(batch.p.astype(Z.dtype), mcfg)
    lw = hcfg.lambda_w

    def body(carry, x):
        P, Zc = carry
        e, t, s = x
        z = Zc[s]
        dP, dz, _, _ = M.sample_grad(P, z, e, t, hcfg.lambda_z, lw)
        r = dP["b"][-1][0]  # delta_L = y - t
        P = jax.tree_util.tree_map(lambda p, g: p - hcfg.lr_w * g, P, dP)
        Zc = Zc.at[s].set(z - hcfg.lr_z * dz)
        return (P, Zc), 0.5 * r * r + 0.5 * hcfg.lambda_z * jnp.sum(z * z)

    (params, Z), loss = jax.lax.scan(body, (params, Z), (enc, batch.t, batch.s), unroll=hcfg.unroll)
    return params, Z, loss


def batch_loss_and_grads(params, Z, batch: Batch, mcfg: M.ModelConfig, lambda_z: float, lambda_w: float = 0.0):
    """Mean per-sample loss over the batch and its hand-derived gradient w.r.t. (params, Z).

    L = mean_j [0.5 (y_j - t_j)^2 + 0.5 lambda_z |Z[s_j]|^2] + 0.5 lambda_w sum_l |W_l|^2.
    Returns (loss, (dparams, dZ), per-sample losses)."""
    u, _ = _batch_inputs(Z, batch, mcfg)
    y, cache = M.forward(params, u)
    B = y.shape[0]
    r = y - batch.t
    zs = u[:, : mcfg.latent_dim]
    loss_B = 0.5 * r * r + 0.5 * lambda_z * jnp.sum(zs * zs, -1)
    loss = jnp.mean(loss_B)
    dP, du = M.backward(params, cache, r / B)
    onehot = jax.nn.one_hot(batch.s, Z.shape[0], dtype=Z.dtype)
    dZ = onehot.T @ du[:, : mcfg.latent_dim] + lambda_z * (onehot.sum(0) / B)[:, None] * Z
    if lambda_w:
        loss = loss + 0.5 * lambda_w * sum(jnp.sum(W * W) for W in params["W"])
        dP["W"] = [g + lambda_w * W for g, W in zip(dP["W"], params["W"])]
    return loss, (dP, dZ), loss_B


def batched_optimizer(hcfg: ScheduleConfig) -> optax.GradientTransformation:
    return optax.adam(hcfg.batched_lr)


def init_opt(params, Z, hcfg: ScheduleConfig):
    """Optimizer state: optax state for `batched`, () otherwise."""
    if hcfg.name == "batched":
        return batched_optimizer(hcfg).init({"params": params, "Z": Z})
    return ()


def update(params, Z, opt, batch: Batch, mcfg: M.ModelConfig, hcfg: ScheduleConfig):
    """One micro-batch of the selected schedule -> (params, Z, opt, per-sample loss [B])."""
    if hcfg.name == "strict":
        params, Z, loss = strict_update(params, Z, batch, mcfg, hcfg)
    elif hcfg.name == "microbatch":
        fn = microbatch_scan if hcfg.chunk == 1 else microbatch_blocked
        params, Z, loss = fn(params, Z, batch, mcfg, hcfg)
    elif hcfg.name == "batched":
        _, (dP, dZ), loss = batch_loss_and_grads(params, Z, batch, mcfg, hcfg.lambda_z, hcfg.lambda_w)
        tree = {"params": params, "Z": Z}
        upd, opt = batched_optimizer(hcfg).update({"params": dP, "Z": dZ}, opt, tree)
        tree = optax.apply_updates(tree, upd)
        params, Z = tree["params"], tree["Z"]
    else:
        raise ConfigError(f"unknown schedule {hcfg.name!r}; choose one of {SCHEDULES}")
    return params, Z, opt, loss
