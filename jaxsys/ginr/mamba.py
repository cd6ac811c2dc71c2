"""Mamba mixer, bidirectional Mamba and the pre-norm residual block, as pure functions on params dicts.

Mamba (Gu & Dao 2023, mamba_ssm's `Mamba` with its defaults): for x [B, L, dim], d_inner = expand * dim,

    (xi, z) = split(x W_in)                       in_proj, no bias, [dim -> 2 d_inner]
    xi = silu(causal_depthwise_conv(xi) + b_conv) kernel d_conv, left zero padding
    (dt, B, C) = split(xi W_x)                    x_proj, no bias, [d_inner -> dt_rank + 2 d_state]
    delta = softplus(dt W_dt + b_dt)              dt_proj; b_dt = softplus^-1(dt0), dt0 log-uniform
    y = selective_scan(xi, delta, -exp(A_log), B, C, D, z)   A_log = log(1..d_state), D = 1
    out = y W_out                                 out_proj, no bias

BiMamba: (Mamba_f(x) + flip(Mamba_r(flip(x)))) / 2 with separate weights (flip along L).
`bimamba_apply_glr` / `block_apply_glr` compute the same on tokens laid out [G, L, R, dim] (batch groups,
time, rows), with no flips: the reverse direction is an anti-causal conv and a scan run backwards in
time. This is the encoder's fast path (see model.encode); the [B, L, dim] functions are the reference.
Block (mamba_ssm `Block`, fused_add_norm=False): residual = x (+ residual); h = mixer(LN(residual));
residual = h + residual; h = MLP(LN2(residual)); returns (h, residual).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.ginr.scan import scan_grouped, selective_scan
from jaxsys.nn.linear import dense  # y = x W^T + b, optional bf16 operands md (model.py imports it here)


def torch_linear_init(key, in_dim: int, out_dim: int, bias: bool = True, dtype=jnp.float32) -> dict:
    """nn.Linear's default: W, b ~ U(-1/sqrt(in), 1/sqrt(in)); stored w_OxI as in jaxsys.nn.linear."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(in_dim)
    p = {"w": jax.random.uniform(kw, (out_dim, in_dim), dtype, -bound, bound)}
    if bias:
        p["b"] = jax.random.uniform(kb, (out_dim,), dtype, -bound, bound)
    return p


def layernorm_init(dim: int, dtype=jnp.float32) -> dict:
    return {"g": jnp.ones((dim,), dtype), "b": jnp.zeros((dim,), dtype)}


def layernorm(p: dict, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * g + b over the last axis (statistics in float32 at least)."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mu = xf.mean(-1, keepdims=True)
    var = ((xf - mu) ** 2).mean(-1, keepdims=True)
    return ((xf - mu) * jax.lax.rsqrt(var + eps)).astype(x.dtype) * p["g"] + p["b"]


def mamba_init(
    key,
    dim: int,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    dt_rank: int | None = None,
    dt_min: float = 1e-3,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
    dtype=jnp.float32,
) -> dict:
    """Parameters of one Mamba mixer with mamba_ssm's initialisation."""
    d_inner = expand * dim
    dt_rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
    k = jax.random.split(key, 6)
    conv_bound = 1.0 / math.sqrt(d_conv)  # nn.Conv1d default with groups = channels, fan_in = d_conv
    dt_std = dt_rank**-0.5
    dt = jnp.exp(
        jax.random.uniform(k[4], (d_inner,), jnp.float32) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    )
    dt = jnp.maximum(dt, dt_init_floor)
    inv_softplus_dt = dt + jnp.log(-jnp.expm1(-dt))
    return {
        "in_proj": torch_linear_init(k[0], dim, 2 * d_inner, bias=False, dtype=dtype),
        "conv_w": jax.random.uniform(k[1], (d_inner, d_conv), dtype, -conv_bound, conv_bound),
        "conv_b": jax.random.uniform(k[2], (d_inner,), dtype, -conv_bound, conv_bound),
        "x_proj": torch_linear_init(k[3], d_inner, dt_rank + 2 * d_state, bias=False, dtype=dtype),
        "dt_proj": {
            "w": jax.random.uniform(k[5], (d_inner, dt_rank), dtype, -dt_std, dt_std),
            "b": inv_softplus_dt.astype(dtype),
        },
        "A_log": jnp.log(jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, 1))).astype(dtype),
        "D": jnp.ones((d_inner,), dtype),
        "out_proj": torch_linear_init(jax.random.fold_in(key, 7), d_inner, dim, bias=False, dtype=dtype),
    }


def causal_depthwise_conv(x_BxLxC: jax.Array, w_CxK: jax.Array, b_C: jax.Array) -> jax.Array:
    """y[t] = b + sum_k w[k] x[t - (K-1) + k] with zeros before t = 0 (torch Conv1d, padding K-1, cut)."""
    K = w_CxK.shape[1]
    L = x_BxLxC.shape[1]
    xp = jnp.pad(x_BxLxC, ((0, 0), (K - 1, 0), (0, 0)))
    y = sum(xp[:, k : k + L] * w_CxK[:, k] for k in range(K))
    return y + b_C


def _ssm_inputs(p: dict, xi: jax.Array, dtype, md: str | None):
    """The scan's inputs from the conv output xi (any layout, channels last): (delta, B, C, A, f) with
    delta = softplus(dt_proj(dt)), (dt, B, C) = split(x_proj(xi)), A = -exp(A_log) and f the scan's
    float type (at least float32: exp(delta A) products lose precision in bfloat16)."""
    d_state = p["A_log"].shape[1]
    dt_rank = p["dt_proj"]["w"].shape[1]
    dbc = dense(p["x_proj"], xi, md)
    dt, Bm, Cm = dbc[..., :dt_rank], dbc[..., dt_rank : dt_rank + d_state], dbc[..., dt_rank + d_state :]
    delta = jax.nn.softplus(dense(p["dt_proj"], dt, md))
    f = jnp.promote_types(dtype, jnp.float32)
    return delta, Bm, Cm, -jnp.exp(p["A_log"].astype(f)), f


def mamba_apply(
    p: dict,
    x_BxLxD: jax.Array,
    *,
    scan_mode: str = "associative",
    chunk: int = 0,
    checkpoint: bool = False,
    keep=None,
    md: str | None = None,
) -> jax.Array:
    """One Mamba mixer on x [B, L, dim] -> [B, L, dim] (see module docstring).

    keep: optional int positions [K]; the output is then [B, K, dim] = full output[:, keep], with the
    (per-token) out_proj applied only there. md: matmul operand dtype of the projections (None or
    "bfloat16", see jaxsys.nn.linear.project); the scan always runs in float32 at least."""
    d_inner = p["D"].shape[0]
    xz = dense(p["in_proj"], x_BxLxD, md)
    xi, z = xz[..., :d_inner], xz[..., d_inner:]
    xi = jax.nn.silu(causal_depthwise_conv(xi, p["conv_w"], p["conv_b"]))
    delta, Bm, Cm, A, f = _ssm_inputs(p, xi, x_BxLxD.dtype, md)
    y = selective_scan(
        xi.astype(f),
        delta.astype(f),
        A,
        Bm.astype(f),
        Cm.astype(f),
        p["D"].astype(f),
        z.astype(f),
        mode=scan_mode,
        chunk=chunk,
        checkpoint=checkpoint,
    )
    if keep is not None:
        y = jnp.take(y, keep, axis=1)
    return dense(p["out_proj"], y.astype(x_BxLxD.dtype), md)


def bimamba_init(key, dim: int, **kw) -> dict:
    kf, kr = jax.random.split(key)
    return {"f": mamba_init(kf, dim, **kw), "r": mamba_init(kr, dim, **kw)}


def bimamba_apply(
    p: dict,
    x_BxLxD: jax.Array,
    *,
    scan_mode: str = "associative",
    chunk: int = 0,
    checkpoint: bool = False,
    fuse_directions: bool = True,
    keep=None,
    md: str | None = None,
    **ignored,
) -> jax.Array:
    """(Mamba_f(x) + flip(Mamba_r(flip(x)))) / 2. Extra keyword arguments (e.g. inference_params,
    which mamba_ssm's Block passes to its mixer) are accepted and ignored.

    fuse_directions: run both directions as one vmapped Mamba over stacked weights (one scan loop of
    twice the width instead of two loops; same result).
    keep: optional positions [K] (static ints): return only output[:, keep] (see mamba_apply)."""
    kw = dict(scan_mode=scan_mode, chunk=chunk, checkpoint=checkpoint, md=md)
    L = x_BxLxD.shape[1]
    x_rev = jnp.flip(x_BxLxD, axis=1)
    if keep is not None:  # position t of the flipped sequence is L - 1 - t of the original
        keep = np.asarray(keep)
        keeps = (jnp.asarray(keep), jnp.asarray(L - 1 - keep))
    if fuse_directions:
        pst = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), p["f"], p["r"])
        xs = jnp.stack([x_BxLxD, x_rev])
        if keep is None:
            ys = jax.vmap(lambda pp, xx: mamba_apply(pp, xx, **kw))(pst, xs)
            fwd, bwd = ys[0], jnp.flip(ys[1], axis=1)
        else:
            ys = jax.vmap(lambda pp, xx, kk: mamba_apply(pp, xx, keep=kk, **kw))(pst, xs, jnp.stack(keeps))
            fwd, bwd = ys[0], ys[1]
    elif keep is None:
        fwd = mamba_apply(p["f"], x_BxLxD, **kw)
        bwd = jnp.flip(mamba_apply(p["r"], x_rev, **kw), axis=1)
    else:
        fwd = mamba_apply(p["f"], x_BxLxD, keep=keeps[0], **kw)
        bwd = mamba_apply(p["r"], x_rev, keep=keeps[1], **kw)
    return (fwd + bwd) / 2


def block_init(key, dim: int, ff_dim: int, **mamba_kw) -> dict:
    k = jax.random.split(key, 3)
    return {
        "norm": layernorm_init(dim),
        "mixer": bimamba_init(k[0], dim, **mamba_kw),
        "norm2": layernorm_init(dim),
        "mlp": {"fc1": torch_linear_init(k[1], dim, ff_dim), "fc2": torch_linear_init(k[2], ff_dim, dim)},
    }


def block_apply(
    p: dict, x: jax.Array, residual: jax.Array | None, keep=None, **mixer_kw
) -> tuple[jax.Array, jax.Array]:
    """Pre-norm residual block: add -> LayerNorm -> BiMamba, add -> LayerNorm -> MLP (GELU).

    keep: optional static positions [K]: after the mixer (which needs the whole sequence) only these
    tokens are computed, i.e. returns (h[:, keep], residual[:, keep]) of the full block, at a fraction
    of the out_proj and MLP cost (the model's last block: only the LP tokens are read).
    mixer_kw["md"] (optional) also sets the MLP's matmul operand dtype."""
    mixer = lambda pm, xn: bimamba_apply(pm, xn, keep=keep, **mixer_kw)
    return _block(p, x, residual, keep, mixer, mixer_kw.get("md"))


def _block(p: dict, x, residual, keep, mixer, md: str | None) -> tuple[jax.Array, jax.Array]:
    """The block body for any layout whose sequence axis is 1: mixer(params, LN(x + residual))."""
    residual = x if residual is None else x + residual
    h = mixer(p["mixer"], layernorm(p["norm"], residual))
    if keep is not None:
        residual = jnp.take(residual, jnp.asarray(np.asarray(keep)), axis=1)
    residual = h + residual
    h = layernorm(p["norm2"], residual)
    h = dense(p["mlp"]["fc2"], jax.nn.gelu(dense(p["mlp"]["fc1"], h, md), approximate=False), md)
    return h, residual


# ---------------------------------------------------------------- fast path: [G, L, R, dim] layout
def _shift_conv(x_GxLxRxC: jax.Array, w_CxK: jax.Array, b_C: jax.Array, anti_causal: bool) -> jax.Array:
    """Depthwise conv along axis 1. Causal: y[t] = b + sum_k w[k] x[t - (K-1) + k] (= the causal conv).
    Anti-causal: y[t] = b + sum_k w[k] x[t + (K-1) - k], i.e. the causal conv of the time-flipped
    sequence, flipped back (the reverse direction of BiMamba)."""
    K = w_CxK.shape[1]
    L = x_GxLxRxC.shape[1]
    pad = ((0, 0), (0, K - 1) if anti_causal else (K - 1, 0), (0, 0), (0, 0))
    xp = jnp.pad(x_GxLxRxC, pad)
    if anti_causal:
        y = sum(xp[:, K - 1 - k : K - 1 - k + L] * w_CxK[:, k] for k in range(K))
    else:
        y = sum(xp[:, k : k + L] * w_CxK[:, k] for k in range(K))
    return y + b_C


def _mamba_core_glr(
    p: dict, xi: jax.Array, z: jax.Array, dtype, chunk: int, reverse: bool, keep, md: str | None = None
):
    """One direction after in_proj: conv, x/dt projections, the scan (backwards in time when reverse),
    D skip and gate -> y [G, L or K, R, d_inner] (before out_proj)."""
    xi = jax.nn.silu(_shift_conv(xi, p["conv_w"], p["conv_b"], anti_causal=reverse))
    delta, Bm, Cm, A, f = _ssm_inputs(p, xi, dtype, md)
    xf = xi.astype(f)
    y = scan_grouped(xf, delta.astype(f), A, Bm.astype(f), Cm.astype(f), chunk=chunk, reverse=reverse)
    y = (y + p["D"].astype(f) * xf) * jax.nn.silu(z.astype(f))
    if keep is not None:
        y = jnp.take(y, keep, axis=1)
    return y.astype(dtype)


def bimamba_apply_glr(
    p: dict, x_GxLxRxD: jax.Array, *, chunk: int = 16, keep=None, md: str | None = None, **ignored
) -> jax.Array:
    """BiMamba on [G, L, R, dim] tokens (sequence axis 1): equal to bimamba_apply on the [B, L, dim]
    layout (b = g R + r), with no array flipped (the reverse direction: anti-causal conv, scan run
    backwards in time). keep: optional static positions along L; returns [G, K, R, dim]. (One matmul
    for both directions' in_proj, or for both out_proj over [y_f, y_r], was no faster.)"""
    pf, pr = p["f"], p["r"]
    di = pf["D"].shape[0]
    if keep is not None:
        keep = jnp.asarray(np.asarray(keep))
    x = x_GxLxRxD
    xz_f, xz_r = dense(pf["in_proj"], x, md), dense(pr["in_proj"], x, md)
    y_f = _mamba_core_glr(pf, xz_f[..., :di], xz_f[..., di:], x.dtype, chunk, False, keep, md)
    y_r = _mamba_core_glr(pr, xz_r[..., :di], xz_r[..., di:], x.dtype, chunk, True, keep, md)
    return (dense(pf["out_proj"], y_f, md) + dense(pr["out_proj"], y_r, md)) / 2


def block_apply_glr(
    p: dict, x: jax.Array, residual: jax.Array | None, keep=None, chunk: int = 16, md: str | None = None
) -> tuple[jax.Array, jax.Array]:
    """block_apply on [G, L, R, dim] tokens (keep: static positions along axis 1)."""
    mixer = lambda pm, xn: bimamba_apply_glr(pm, xn, chunk=chunk, keep=keep, md=md)
    return _block(p, x, residual, keep, mixer, md)
