"""microgpt tensor engine: batched forward with caches and a hand-derived backward per op.

Parameters (no biases; matrices rows = out, cols = in), a flat dict keyed as in weights.json:
  wte [V, E], wpe [block_size, E], lm_head [V, E] (not tied), and per layer i
  layer{i}.attn_wq|attn_wk|attn_wv|attn_wo [E, E], layer{i}.mlp_fc1 [4E, E], layer{i}.mlp_fc2 [E, 4E].

Forward on tokens [B, T]:
  x = rmsnorm(wte[tok] + wpe[pos])
  per layer:  x = x + wo(attn(rmsnorm(x)));  x = x + fc2(relu(fc1(rmsnorm(x))))
  logits = lm_head x                                   (no final norm)

The backward walks the same chain in reverse: each op's vector-Jacobian product is written out
(see `_layer_backward` and the shared blocks in jaxsys.nn.rmsnorm / jaxsys.nn.attention).
`loss_fn` + `jax.grad` is the autodiff path of the same forward, kept for comparison and as an option.

matmul_dtype (keyword of forward/backward/loss functions; None = the parameters' dtype): with
"bfloat16" every parameter matmul (qkv, wo, fc1, fc2, lm_head; forward and both backward products)
and the attention core's matmuls (scores, e V and their backward products) round their two
operands to bfloat16 and accumulate in the parameters' dtype (preferred_element_type); master
weights, activations between ops, exp/softmax statistics, norms and the loss stay float32.
`linear` and the attention core carry custom VJPs that use the same rounded products, so the
jax.grad path differentiates exactly what the hand backward computes.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.errors import ConfigError, DataError, ShapeError
from jaxsys.gpt.config import GPTConfig
from jaxsys.nn.attention import DEFAULT_Q_BLOCK, HeadMajorCache, attention_backward_hm, attention_forward_hm

# parameter matmuls, optionally with bfloat16 operands (shared with other systems)
from jaxsys.nn.linear import MATMUL_DTYPES, linear_dw, linear_dx, normalize_matmul_dtype  # noqa: F401
from jaxsys.nn.linear import project as linear
from jaxsys.nn.rmsnorm import RMSNormCache, rmsnorm_backward, rmsnorm_forward

INIT_STD = 0.08
LAYER_MATRICES = ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")


def param_shapes(cfg: GPTConfig) -> dict[str, tuple[int, int]]:
    """Parameter name -> shape, in the order of weights.json (wte, wpe, lm_head, then layers)."""
    e, v = cfg.n_embd, cfg.vocab_size
    shapes = {"wte": (v, e), "wpe": (cfg.block_size, e), "lm_head": (v, e)}
    for i in range(cfg.n_layer):
        shapes[f"layer{i}.attn_wq"] = (e, e)
        shapes[f"layer{i}.attn_wk"] = (e, e)
        shapes[f"layer{i}.attn_wv"] = (e, e)
        shapes[f"layer{i}.attn_wo"] = (e, e)
        shapes[f"layer{i}.mlp_fc1"] = (4 * e, e)
        shapes[f"layer{i}.mlp_fc2"] = (e, 4 * e)
    return shapes


def init_params(key: jax.Array, cfg: GPTConfig, dtype=jnp.float32) -> dict[str, jax.Array]:
    """Every matrix ~ N(0, 0.08^2), one PRNG key per matrix (split in param_shapes order)."""
    shapes = param_shapes(cfg)
    keys = jax.random.split(key, len(shapes))
    return {name: INIT_STD * jax.random.normal(k, shape, dtype) for k, (name, shape) in zip(keys, shapes.items())}


def num_params(cfg: GPTConfig) -> int:
    return int(sum(a * b for a, b in param_shapes(cfg).values()))


def flops_per_token(cfg: GPTConfig, t: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) for sequences of length t.

    Matmuls with parameters: 2 * (#matrix params without wpe/wte) per token forward; attention
    scores and weighted sum: 2 * 2 * t * E per token per layer (full T x T, the usual MFU
    convention; the causal block skipping in jaxsys.nn.attention computes fewer).
    """
    e = cfg.n_embd
    matmul = 2 * (cfg.n_layer * 12 * e * e + cfg.vocab_size * e)
    attn = cfg.n_layer * 4 * t * e
    return 3.0 * (matmul + attn)


def flops_per_token_computed(cfg: GPTConfig, t: int, q_block: int | None = DEFAULT_Q_BLOCK) -> float:
    """Training FLOPs per token that the engine actually executes: as `flops_per_token`, but the
    attention products cover only the causal query blocks (query block [a, b) against keys [0, b),
    see jaxsys.nn.attention.query_blocks) instead of the full T x T."""
    from jaxsys.nn.attention import query_blocks

    e = cfg.n_embd
    matmul = 2 * (cfg.n_layer * 12 * e * e + cfg.vocab_size * e)
    attn = cfg.n_layer * 4 * e * sum((b - a) * b for a, b in query_blocks(t, q_block)) / t
    return 3.0 * (matmul + attn)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _attention_lp(q, k, v, q_block, md):
    """attention_forward_hm with bf16 matmul operands; its VJP is the hand attention_backward_hm with the
    same rounding (so the jax.grad engine computes what the hand engine does). Only o may carry a
    cotangent: the cache outputs are for the hand backward and are not differentiated."""
    return attention_forward_hm(q, k, v, q_block, matmul_dtype=md)


def _attention_lp_fwd(q, k, v, q_block, md):
    o, cache = attention_forward_hm(q, k, v, q_block, matmul_dtype=md)
    return (o, cache), cache


def _attention_lp_bwd(q_block, md, cache, cts):
    grads = attention_backward_hm(cache, cts[0], matmul_dtype=md)
    return tuple(g.astype(x.dtype) for g, x in zip(grads, (cache.q, cache.k, cache.v)))


_attention_lp.defvjp(_attention_lp_fwd, _attention_lp_bwd)


def _attention(q, k, v, q_block, md):
    """Causal attention core on head-major [B, H, T, Dh] q, k, v -> (o [B, H, T, Dh], cache)."""
    if md is None:
        return attention_forward_hm(q, k, v, q_block)
    return _attention_lp(q, k, v, q_block, md)


# ----------------------------------------------------------------------------------------------
# forward


class LayerCache(NamedTuple):
    norm1: RMSNormCache  # rmsnorm before attention; norm1.y is the qkv input h [B, T, E]
    attn: HeadMajorCache  # q, k, v, e, 1/l, o in head-major layout [B, H, T, Dh]
    o: jax.Array  # [B, T, E] attention output in token-major layout (the wo input; in
    # the matmul dtype)
    norm2: RMSNormCache  # rmsnorm before the MLP; norm2.y is the fc1 input [B, T, E]
    r: jax.Array  # [B, T, 4E] relu(fc1 h2), the fc2 input (r > 0 is the ReLU mask; in
    # the matmul dtype)


class Cache(NamedTuple):
    tokens: jax.Array  # [B, T] int
    norm0: RMSNormCache  # rmsnorm of the embedding sum
    layers: tuple  # LayerCache per layer
    x: jax.Array  # [B, T, E] final residual stream (lm_head input)


def _qkv_weight(params: dict, i: int) -> jax.Array:
    """[3E, E] stacked wq, wk, wv: one matmul produces q, k and v."""
    return jnp.concatenate(
        [params[f"layer{i}.attn_wq"], params[f"layer{i}.attn_wk"], params[f"layer{i}.attn_wv"]], axis=0
    )


def _layer_forward(
    params: dict, i: int, x: jax.Array, n_head: int, q_block: int | None, md: str | None = None
) -> tuple[jax.Array, LayerCache]:
    b, t, e = x.shape
    h, norm1 = rmsnorm_forward(x)
    qkv = linear(h, _qkv_weight(params, i), md)  # [B, T, 3E]
    if md is not None:  # q, k, v are only ever used as matmul operands: round them once here
        qkv = qkv.astype(md)
    # one transpose to head-major [3, B, H, T, Dh] for the attention core
    qkv = jnp.transpose(qkv.reshape(b, t, 3, n_head, e // n_head), (2, 0, 3, 1, 4))
    o_hm, attn = _attention(qkv[0], qkv[1], qkv[2], q_block, md)
    o = jnp.swapaxes(o_hm, 1, 2).reshape(b, t, e)
    x = x + linear(o, params[f"layer{i}.attn_wo"], md)
    h2, norm2 = rmsnorm_forward(x)
    f = linear(h2, params[f"layer{i}.mlp_fc1"], md)
    # with bf16 matmuls r is only ever used rounded (fc2 forward, d_fc2, the ReLU mask): keep it
    # rounded (a positive float32 stays positive in bfloat16, so the mask is unchanged)
    r = jnp.maximum(f, 0) if md is None else jnp.maximum(f, 0).astype(md)
    x = x + linear(r, params[f"layer{i}.mlp_fc2"], md)
    # the cache keeps o as the wo product uses it (rounded with bf16 matmuls; XLA shares the cast)
    return x, LayerCache(norm1, attn, o if md is None else o.astype(md), norm2, r)


def forward(
    params: dict,
    tokens_BxT: jax.Array,
    cfg: GPTConfig,
    q_block: int | None = DEFAULT_Q_BLOCK,
    matmul_dtype: str | None = None,
) -> tuple[jax.Array, Cache]:
    """logits [B, T, V] for token ids [B, T] (T <= block_size), and the cache for `backward`.

    q_block: attention query-block size for causal block skipping (jaxsys.nn.attention).
    matmul_dtype: None/"float32" or "bfloat16" operands of the parameter matmuls (module doc)."""
    md = normalize_matmul_dtype(matmul_dtype)
    t = tokens_BxT.shape[1]
    x0 = jnp.take(params["wte"], tokens_BxT, axis=0) + params["wpe"][None, :t]
    x, norm0 = rmsnorm_forward(x0)
    layers = []
    for i in range(cfg.n_layer):
        x, lc = _layer_forward(params, i, x, cfg.n_head, q_block, md)
        layers.append(lc)
    logits = linear(x, params["lm_head"], md)
    return logits, Cache(tokens_BxT, norm0, tuple(layers), x)


# ----------------------------------------------------------------------------------------------
# backward


def _layer_backward(
    params: dict, i: int, lc: LayerCache, dx: jax.Array, grads: dict, md: str | None = None
) -> jax.Array:
    """Backward of one block; writes the layer's weight gradients into `grads`, returns dL/dx_in.

    With y = W u (W rows = out) the VJP is dW = sum_{b,t} dy u^T and du = W^T dy, i.e.
    einsum('bto,bti->oi', dy, u) and einsum('bto,oi->bti', dy, W). Residual additions pass dx
    through unchanged and add the branch's input gradient.

    MLP branch  x2 = x1 + fc2 relu(fc1 rmsnorm(x1)):
      d_fc2 = dx2 r^T,  dr = fc2^T dx2,  df = dr [r > 0],  d_fc1 = df h2^T,  dh2 = fc1^T df,
      dx1 = dx2 + rmsnorm_backward(dh2).
    Attention branch  x1 = x0 + wo attn(q, k, v), [q; k; v] = Wqkv rmsnorm(x0):
      d_wo = dx1 o^T,  do = wo^T dx1,  (dq, dk, dv) = attention_backward_hm(do),
      d_Wqkv = [dq; dk; dv] h^T,  dh = Wqkv^T [dq; dk; dv],  dx0 = dx1 + rmsnorm_backward(dh).
    """
    b, t, e = dx.shape
    p = f"layer{i}."
    # MLP
    grads[p + "mlp_fc2"] = linear_dw(dx, lc.r, md)
    dr = linear_dx(dx, params[p + "mlp_fc2"], md)
    df = jnp.where(lc.r > 0, dr, 0)  # relu(f) > 0 exactly where f > 0
    grads[p + "mlp_fc1"] = linear_dw(df, lc.norm2.y, md)
    dh2 = linear_dx(df, params[p + "mlp_fc1"], md)
    dx = dx + rmsnorm_backward(lc.norm2, dh2)
    # attention
    grads[p + "attn_wo"] = linear_dw(dx, lc.o, md)
    n_head, dh = lc.attn.o.shape[1], lc.attn.o.shape[3]
    do = jnp.swapaxes(linear_dx(dx, params[p + "attn_wo"], md).reshape(b, t, n_head, dh), 1, 2)
    dq, dk, dv = attention_backward_hm(lc.attn, do, matmul_dtype=md)  # [B, H, T, Dh] each
    dqkv = jnp.stack([dq, dk, dv]) if md is None else jnp.stack([dq, dk, dv]).astype(md)
    dqkv = jnp.transpose(dqkv, (1, 3, 0, 2, 4)).reshape(b, t, 3 * e)  # only used rounded
    dw = linear_dw(dqkv, lc.norm1.y, md)
    grads[p + "attn_wq"], grads[p + "attn_wk"], grads[p + "attn_wv"] = jnp.split(dw, 3, axis=0)
    dh = linear_dx(dqkv, _qkv_weight(params, i), md)
    return dx + rmsnorm_backward(lc.norm1, dh)


def backward(params: dict, cache: Cache, dlogits_BxTxV: jax.Array, matmul_dtype: str | None = None) -> dict:
    """Gradients of every parameter given dL/dlogits [B, T, V].

    logits = lm_head x:  d_lm_head = sum_{b,t} dlogits x^T,  dx = lm_head^T dlogits.
    Layers in reverse (see `_layer_backward`), then x = rmsnorm(x0) and
    x0 = wte[tok] + wpe[pos]:  d_wte[v] = sum over (b, t) with tok[b, t] = v of dx0[b, t]
    (scatter-add), d_wpe[t] = sum_b dx0[b, t] for t < T and 0 for the unused rows.
    """
    md = normalize_matmul_dtype(matmul_dtype)
    grads = {}
    grads["lm_head"] = linear_dw(dlogits_BxTxV, cache.x, md)
    dx = linear_dx(dlogits_BxTxV, params["lm_head"], md)
    for i in reversed(range(len(cache.layers))):
        dx = _layer_backward(params, i, cache.layers[i], dx, grads, md)
    dx0 = rmsnorm_backward(cache.norm0, dx)
    e = dx0.shape[-1]
    grads["wte"] = jnp.zeros_like(params["wte"]).at[cache.tokens.reshape(-1)].add(dx0.reshape(-1, e))
    t = dx0.shape[1]
    grads["wpe"] = jnp.zeros_like(params["wpe"]).at[:t].set(dx0.sum(axis=0))
    return {k: grads[k] for k in params}


# ----------------------------------------------------------------------------------------------
# loss


class XentCache(NamedTuple):
    probs: jax.Array  # [B, T, V] softmax(logits)
    onehot_targets: jax.Array  # [B, T] int target ids
    weight: jax.Array  # [B, T] mask / number of unmasked positions


def cross_entropy_forward(
    logits_BxTxV: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array
) -> tuple[jax.Array, XentCache]:
    """L = sum_{b,t} m_bt (logsumexp(z_bt) - z_bt[y_bt]) / max(1, sum m): mean over unmasked positions."""
    z = logits_BxTxV
    zmax = jnp.max(z, axis=-1, keepdims=True)
    ez = jnp.exp(z - zmax)
    sez = jnp.sum(ez, axis=-1, keepdims=True)
    lse = (jnp.log(sez) + zmax)[..., 0]
    zy = jnp.take_along_axis(z, targets_BxT[..., None], axis=-1)[..., 0]
    m = mask_BxT.astype(z.dtype)
    w = m / jnp.maximum(jnp.sum(m), 1)
    return jnp.sum(w * (lse - zy)), XentCache(ez / sez, targets_BxT, w)


def cross_entropy_backward(cache: XentCache, dloss=1.0) -> jax.Array:
    """dL/dz_bt = w_bt (softmax(z_bt) - onehot(y_bt)), w = mask / sum(mask)."""
    probs, y, w = cache
    onehot = jax.nn.one_hot(y, probs.shape[-1], dtype=probs.dtype)
    return (dloss * w)[..., None] * (probs - onehot)


def loss_fn(
    params: dict,
    tokens_BxT: jax.Array,
    targets_BxT: jax.Array,
    mask_BxT: jax.Array,
    cfg: GPTConfig,
    matmul_dtype: str | None = None,
) -> jax.Array:
    """Mean cross-entropy over unmasked positions (the function the jax.grad path differentiates)."""
    logits, _ = forward(params, tokens_BxT, cfg, matmul_dtype=matmul_dtype)
    return cross_entropy_forward(logits, targets_BxT, mask_BxT)[0]


def _hand_loss_and_grads(params, tokens, targets, mask, cfg, matmul_dtype=None):
    logits, cache = forward(params, tokens, cfg, matmul_dtype=matmul_dtype)
    loss, xc = cross_entropy_forward(logits, targets, mask)
    return loss, backward(params, cache, cross_entropy_backward(xc), matmul_dtype=matmul_dtype)


def _autodiff_loss_and_grads(params, tokens, targets, mask, cfg, matmul_dtype=None):
    return jax.value_and_grad(loss_fn)(params, tokens, targets, mask, cfg, matmul_dtype)


_IMPLS = {"hand": _hand_loss_and_grads, "autodiff": _autodiff_loss_and_grads}
hand_loss_and_grads = jax.jit(_hand_loss_and_grads, static_argnames=("cfg", "matmul_dtype"))
autodiff_loss_and_grads = jax.jit(_autodiff_loss_and_grads, static_argnames=("cfg", "matmul_dtype"))
_JITTED = {"hand": hand_loss_and_grads, "autodiff": autodiff_loss_and_grads}


def loss_and_grads_fn(mode: str, matmul_dtype: str | None = None):
    """The un-jitted (params, tokens, targets, mask, cfg) -> (loss, grads) of a mode, to embed in a
    caller's own jitted step (matmul_dtype: see the module doc)."""
    if mode not in _IMPLS:
        raise ConfigError(f"unknown gradient mode {mode!r}; expected one of {sorted(_IMPLS)}")
    md = normalize_matmul_dtype(matmul_dtype)
    return _IMPLS[mode] if md is None else functools.partial(_IMPLS[mode], matmul_dtype=md)


def validate_batch(params: dict, tokens, targets, mask, cfg: GPTConfig) -> None:
    """Shape/range checks before tracing; raises ShapeError/DataError/ConfigError naming the problem."""
    if not isinstance(tokens, jax.Array):
        tokens = np.asarray(tokens)
    if targets is not None and not isinstance(targets, jax.Array):
        targets = np.asarray(targets)
    shapes = param_shapes(cfg)
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ShapeError(f"params missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
    for k, s in shapes.items():
        if tuple(params[k].shape) != s:
            raise ShapeError(f"param {k} has shape {tuple(params[k].shape)}, expected {s}")
    if jnp.ndim(tokens) != 2:
        raise ShapeError(f"tokens must be [B, T], got shape {jnp.shape(tokens)}")
    b, t = jnp.shape(tokens)
    if t > cfg.block_size:
        raise ConfigError(f"sequence length T={t} exceeds block_size={cfg.block_size}")
    for name, a in (("targets", targets), ("mask", mask)):
        shape = None if a is None else (np.shape(a) if isinstance(a, (list, tuple)) else jnp.shape(a))
        if a is not None and tuple(shape) != (b, t):
            raise ShapeError(f"{name} has shape {tuple(shape)}, expected tokens' shape {(b, t)}")
    for name, a in (("tokens", tokens), ("targets", targets)):
        if a is None or isinstance(a, jax.core.Tracer):
            continue
        if not jnp.issubdtype(jnp.result_type(a), jnp.integer):
            raise DataError(f"{name} must be integer token ids, got dtype {jnp.result_type(a)}")
        a = np.asarray(a)
        if a.size and (a.min() < 0 or a.max() >= cfg.vocab_size):
            raise DataError(f"{name} ids must lie in [0, {cfg.vocab_size}), got range [{a.min()}, {a.max()}]")


def loss_and_grads(
    params: dict, tokens_BxT, targets_BxT, mask_BxT, cfg: GPTConfig, mode: str = "hand", matmul_dtype: str | None = None
) -> tuple[jax.Array, dict]:
    """(mean CE over unmasked positions, gradient dict) with the hand backward or jax.grad.

    mask may be None (all positions count).
    """
    impl = loss_and_grads_fn(mode, matmul_dtype)
    md = normalize_matmul_dtype(matmul_dtype)
    if mask_BxT is None:
        mask_BxT = jnp.ones(jnp.shape(tokens_BxT), jnp.result_type(params["wte"]))
    if isinstance(tokens_BxT, jax.core.Tracer):
        return impl(params, tokens_BxT, targets_BxT, mask_BxT, cfg)
    validate_batch(params, tokens_BxT, targets_BxT, mask_BxT, cfg)
    return _JITTED[mode](
        params, jnp.asarray(tokens_BxT), jnp.asarray(targets_BxT), jnp.asarray(mask_BxT), cfg, matmul_dtype=md
    )


def logits_fn(params: dict, tokens_BxT, cfg: GPTConfig) -> jax.Array:
    """Validated forward returning logits only (jitted)."""
    validate_batch(params, tokens_BxT, None, None, cfg)
    return _logits_jit(params, jnp.asarray(tokens_BxT), cfg)


_logits_jit = jax.jit(lambda params, tokens, cfg: forward(params, tokens, cfg)[0], static_argnames="cfg")
