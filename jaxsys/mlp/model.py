"""Batched MLP with a hand-derived backward pass.

Layer sizes h1 -> h2 -> ... -> hL. Layer l stores W_l [h_{l+1} x h_l] (rows = out, cols = in) and b_l
[h_{l+1}]. For the 2-hidden-layer network of the derivation (sizes h1, h2, h3, h4) on a batch X [B x h1]:

    Z1 = X  W1^T + b1   [B x h2]     A1 = relu(Z1)
    Z2 = A1 W2^T + b2   [B x h3]     A2 = relu(Z2)
    Z3 = A2 W3^T + b3   [B x h4]     Yp = Z3 (regression) or P = softmax(Z3) (classification)

    loss (regression)     L = (1/(2B)) sum (Yp - Y)^2       -> dZ3 = (Yp - Y) / B
    loss (classification) L = -(1/B) sum_b log P[b, y_b]    -> dZ3 = (P - onehot(Y)) / B

    dW3 = dZ3^T A2      db3 = sum_b dZ3      dA2 = dZ3 W3
    dZ2 = dA2 * [Z2 > 0]
    dW2 = dZ2^T A1      db2 = sum_b dZ2      dA1 = dZ2 W2
    dZ1 = dA1 * [Z1 > 0]
    dW1 = dZ1^T X       db1 = sum_b dZ1

`forward`/`backward` implement this for any depth with the `jaxsys.nn` blocks (linear, activation);
`forward_2hidden`/`backward_2hidden` spell out the 2-hidden-layer case symbol for symbol and are
checked against the general pair in the tests.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys import nn
from jaxsys.errors import ConfigError, DataError, ShapeError

TASKS = ("classify", "regress")
MATMULS = ("xla", "pallas")


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    sizes: tuple[int, ...] = (64, 64, 64, 10)  # h1 (input) ... hL (output); >= 2 entries
    task: str = "classify"  # "classify" (softmax CE) or "regress" (MSE, linear out)
    activation: str = "relu"  # hidden activation, a name in jaxsys.nn.ACTIVATIONS
    matmul: str = "xla"  # "xla" (jnp) or "pallas" (tiled kernel, jaxsys.mlp.matmul)

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if len(self.sizes) < 2 or any(s <= 0 for s in self.sizes):
            raise ConfigError(f"MLPConfig.sizes must be >= 2 positive ints, got {self.sizes}")
        if self.task not in TASKS:
            raise ConfigError(f"MLPConfig.task must be one of {TASKS}, got {self.task!r}")
        nn.get_activation(self.activation)  # ConfigError for unknown names
        if self.matmul not in MATMULS:
            raise ConfigError(f"MLPConfig.matmul must be one of {MATMULS}, got {self.matmul!r}")
        if self.task == "classify" and self.sizes[-1] < 2:
            raise ConfigError(f"classification needs >= 2 output classes, got sizes {self.sizes}")

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1


def init_params(key: jax.Array, cfg: MLPConfig, dtype=jnp.float32) -> list[dict]:
    """He-initialised params: a list of {"w": [h_{l+1}, h_l], "b": [h_{l+1}]}, one per layer."""
    keys = jax.random.split(key, cfg.num_layers)
    return [nn.linear_init(k, i, o, dtype=dtype) for k, i, o in zip(keys, cfg.sizes[:-1], cfg.sizes[1:])]


# ---- affine layer, with the optional Pallas matmul -------------------------------------------------


def _linear_forward(p: dict, x: jax.Array, cfg: MLPConfig):
    if cfg.matmul == "xla":
        return nn.linear_forward(p, x)
    from jaxsys.mlp.matmul import matmul

    return matmul(x, p["w"].T) + p["b"][None, :], nn.linear.LinearCache(x)


def _linear_backward(p: dict, cache, dz: jax.Array, cfg: MLPConfig, need_dx: bool = True):
    if cfg.matmul == "xla":
        return nn.linear_backward(p, cache, dz)
    from jaxsys.mlp.matmul import matmul

    grads = {"w": matmul(dz.T, cache.x), "b": dz.sum(axis=0)}
    return grads, (matmul(dz, p["w"]) if need_dx else None)


# ---- general depth ------------------------------------------------------------------------------


class MLPCache(NamedTuple):
    linear: tuple  # per layer: LinearCache (holds that layer's input, X or A_{l-1})
    act: tuple  # per hidden layer: the activation's cache (Z_l for ReLU)


def forward(params: list[dict], x_BxI: jax.Array, cfg: MLPConfig) -> tuple[jax.Array, MLPCache]:
    """Z_l = A_{l-1} W_l^T + b_l, A_l = act(Z_l) for hidden layers, output Z_L (logits or Yp)."""
    act_fwd, _ = nn.get_activation(cfg.activation)
    a, lin_caches, act_caches = x_BxI, [], []
    for l, p in enumerate(params):
        z, c = _linear_forward(p, a, cfg)
        lin_caches.append(c)
        if l < len(params) - 1:
            a, ac = act_fwd(z)
            act_caches.append(ac)
        else:
            a = z
    return a, MLPCache(tuple(lin_caches), tuple(act_caches))


def backward(
    params: list[dict], cache: MLPCache, d_out: jax.Array, cfg: MLPConfig, need_dx: bool = False
) -> tuple[list[dict], jax.Array | None]:
    """From dZ_L: dW_l = dZ_l^T A_{l-1}, db_l = sum_b dZ_l, dA_{l-1} = dZ_l W_l,
    dZ_{l-1} = act'(dA_{l-1}). Returns (d_params, dX or None)."""
    _, act_bwd = nn.get_activation(cfg.activation)
    dz = d_out
    grads = [None] * len(params)
    dx = None
    for l in reversed(range(len(params))):
        first = l == 0
        g, da = _linear_backward(params[l], cache.linear[l], dz, cfg, need_dx=need_dx or not first)
        grads[l] = g
        if first:
            dx = da if need_dx else None
        else:
            dz = act_bwd(cache.act[l - 1], da)
    return grads, dx


def loss_forward(out: jax.Array, y: jax.Array, cfg: MLPConfig):
    if cfg.task == "classify":
        return nn.softmax_cross_entropy_forward(out, y)
    return nn.mse_forward(out, y)


def loss_backward(cache, cfg: MLPConfig) -> jax.Array:
    if cfg.task == "classify":
        return nn.softmax_cross_entropy_backward(cache)
    return nn.mse_backward(cache)


def loss_fn(params: list[dict], x: jax.Array, y: jax.Array, cfg: MLPConfig) -> jax.Array:
    """Scalar training loss (mean over the batch); the function `jax.grad` differentiates."""
    out, _ = forward(params, x, cfg)
    return loss_forward(out, y, cfg)[0]


def loss_and_grad(
    params: list[dict], x: jax.Array, y: jax.Array, cfg: MLPConfig
) -> tuple[tuple[jax.Array, jax.Array], list[dict]]:
    """((loss, output), d loss / d params) with the hand-derived backward."""
    out, cache = forward(params, x, cfg)
    loss, lcache = loss_forward(out, y, cfg)
    grads, _ = backward(params, cache, loss_backward(lcache, cfg), cfg)
    return (loss, out), grads


def hand_grad(params, x, y, cfg):
    return loss_and_grad(params, x, y, cfg)[1]


def predict(params: list[dict], x: jax.Array, cfg: MLPConfig) -> jax.Array:
    """Class ids (classification) or predictions (regression)."""
    out, _ = forward(params, x, cfg)
    return jnp.argmax(out, axis=-1) if cfg.task == "classify" else out


# ---- the derivation's 2-hidden-layer network, symbol for symbol ---------------------------------


class Cache2(NamedTuple):
    X: jax.Array
    Z1: jax.Array
    A1: jax.Array
    Z2: jax.Array
    A2: jax.Array


def forward_2hidden(params: list[dict], X: jax.Array) -> tuple[jax.Array, Cache2]:
    """Z1 = X W1^T + b1, A1 = relu(Z1), Z2 = A1 W2^T + b2, A2 = relu(Z2), Z3 = A2 W3^T + b3."""
    (W1, b1), (W2, b2), (W3, b3) = [(p["w"], p["b"]) for p in params]
    Z1 = X @ W1.T + b1[None, :]
    A1 = jnp.maximum(Z1, 0)
    Z2 = A1 @ W2.T + b2[None, :]
    A2 = jnp.maximum(Z2, 0)
    Z3 = A2 @ W3.T + b3[None, :]
    return Z3, Cache2(X, Z1, A1, Z2, A2)


def backward_2hidden(params: list[dict], c: Cache2, dZ3: jax.Array) -> list[dict]:
    """dW3 = dZ3^T A2, db3 = sum_b dZ3, dA2 = dZ3 W3, dZ2 = dA2 * [Z2 > 0], dW2 = dZ2^T A1,
    db2 = sum_b dZ2, dA1 = dZ2 W2, dZ1 = dA1 * [Z1 > 0], dW1 = dZ1^T X, db1 = sum_b dZ1."""
    W2, W3 = params[1]["w"], params[2]["w"]
    dW3 = dZ3.T @ c.A2
    db3 = dZ3.sum(axis=0)
    dA2 = dZ3 @ W3
    dZ2 = dA2 * (c.Z2 > 0)
    dW2 = dZ2.T @ c.A1
    db2 = dZ2.sum(axis=0)
    dA1 = dZ2 @ W2
    dZ1 = dA1 * (c.Z1 > 0)
    dW1 = dZ1.T @ c.X
    db1 = dZ1.sum(axis=0)
    return [{"w": dW1, "b": db1}, {"w": dW2, "b": db2}, {"w": dW3, "b": db3}]


# ---- validation (host side, before any trace) ----------------------------------------------------


def validate_params(params, cfg: MLPConfig) -> None:
    if not isinstance(params, (list, tuple)) or len(params) != cfg.num_layers:
        raise ShapeError(
            f"params must be a list of {cfg.num_layers} layers for sizes {cfg.sizes}, "
            f"got {type(params).__name__} of length {len(params) if hasattr(params, '__len__') else '?'}"
        )
    for l, (p, i, o) in enumerate(zip(params, cfg.sizes[:-1], cfg.sizes[1:])):
        if set(p) != {"w", "b"}:
            raise ShapeError(f"params[{l}] must have keys 'w' and 'b', got {sorted(p)}")
        if tuple(p["w"].shape) != (o, i) or tuple(p["b"].shape) != (o,):
            raise ShapeError(
                f"params[{l}]: expected w [{o} x {i}] and b [{o}], got w "
                f"{list(p['w'].shape)} and b {list(p['b'].shape)}"
            )


def validate_batch(x, y, cfg: MLPConfig, where: str = "batch") -> None:
    """Shapes, dtypes and finiteness of a batch; raises ShapeError/DataError naming the problem."""
    xs, ys = np.shape(x), np.shape(y)
    if len(xs) != 2 or xs[1] != cfg.sizes[0]:
        raise ShapeError(f"{where}: inputs must be [B x {cfg.sizes[0]}], got {list(xs)}")
    if xs[0] == 0:
        raise ShapeError(f"{where}: empty batch")
    if not np.all(np.isfinite(np.asarray(x))):
        raise DataError(f"{where}: inputs contain NaN or inf")
    if cfg.task == "classify":
        if ys != (xs[0],):
            raise ShapeError(f"{where}: class labels must be [B] = [{xs[0]}], got {list(ys)}")
        ya = np.asarray(y)
        if not np.issubdtype(ya.dtype, np.integer):
            if not np.all(np.isfinite(ya)):
                raise DataError(f"{where}: labels contain NaN or inf")
            raise DataError(f"{where}: class labels must be integers, got dtype {ya.dtype}")
        if ya.size and (ya.min() < 0 or ya.max() >= cfg.sizes[-1]):
            raise DataError(f"{where}: labels must lie in [0, {cfg.sizes[-1]}), got range [{ya.min()}, {ya.max()}]")
    else:
        if ys != (xs[0], cfg.sizes[-1]):
            raise ShapeError(
                f"{where}: regression targets must be [B x {cfg.sizes[-1]}] = "
                f"[{xs[0]} x {cfg.sizes[-1]}], got {list(ys)}"
            )
        if not np.all(np.isfinite(np.asarray(y))):
            bad = int(np.sum(~np.isfinite(np.asarray(y))))
            raise DataError(f"{where}: regression targets contain {bad} NaN/inf value(s)")


def num_params(cfg: MLPConfig) -> int:
    return sum(i * o + o for i, o in zip(cfg.sizes[:-1], cfg.sizes[1:]))


def flops_per_step(cfg: MLPConfig, batch: int) -> int:
    """Matmul FLOPs of one train step: forward (1x) + backward dW (1x) + dA for layers > 1."""
    fwd = sum(2 * batch * i * o for i, o in zip(cfg.sizes[:-1], cfg.sizes[1:]))
    dx = sum(2 * batch * i * o for i, o in zip(cfg.sizes[1:-1], cfg.sizes[2:]))
    return 2 * fwd + dx
