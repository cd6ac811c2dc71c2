"""Mamba's selective scan (the S6 recurrence), in two interchangeable implementations.

For every batch b, channel d and state n, with A = -exp(A_log) of shape [D, N]:

    dA_t  = exp(delta_t A)                  [B, L, D, N]
    dBu_t = delta_t B_t u_t                 [B, L, D, N]
    x_t   = dA_t * x_{t-1} + dBu_t,  x_0 = 0
    y_t   = sum_n C_t[n] x_t[n] + D u_t     [B, L, D]
    out   = y * silu(z)                     (when a gate z is given)

`mode="associative"`: `lax.associative_scan` over t with the combine
(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2); O(log L) depth, materialises [B, L, D, N] several times.
`mode="sequential"`: `lax.scan` over t carrying x (laid out [B, N, D]); dA and dBu are formed inside the
step; a hand-derived reverse scan is its backward (stores all states, or recomputes them with
checkpoint=True).
`chunk=c > 0` with `mode="sequential"` (the model's default): the same loop, but the forward keeps
only the state at the start of every chunk of c steps; the hand-derived backward walks the chunks in
reverse, and per chunk forms exp(delta A) for all c steps at once, recomputes the c states and runs the
reverse recurrence (each loop body a single fused kernel), then computes every gradient contraction
chunk-wide. Every buffer spans c steps (a few MiB, cache-resident) instead of L (on a CPU each pass
over stored [L, B, N, D] states goes through main memory). `scan_grouped` runs it on inputs
laid out [G, L, R, .] (batch groups one after another), forwards or backwards in time.
`chunk=c > 0` with `mode="associative"`: associative inside chunks of c steps, sequential across chunks.
`checkpoint=True` wraps each chunk (or step) in `jax.checkpoint` so the backward recomputes states
instead of storing them.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxsys.errors import ConfigError, ShapeError

SCAN_MODES = ("associative", "sequential")


def _check(u, delta, A, B, C, D, z):
    if u.ndim != 3:
        raise ShapeError(f"selective_scan: u must be [B, L, D], got shape {u.shape}")
    Bn, L, Dd = u.shape
    if delta.shape != u.shape:
        raise ShapeError(f"selective_scan: delta shape {delta.shape} != u shape {u.shape}")
    if A.ndim != 2 or A.shape[0] != Dd:
        raise ShapeError(f"selective_scan: A must be [D={Dd}, N], got {A.shape}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (Bn, L, N):
            raise ShapeError(f"selective_scan: {name} must be [{Bn}, {L}, {N}], got {t.shape}")
    if D is not None and D.shape != (Dd,):
        raise ShapeError(f"selective_scan: D must be [{Dd}], got {D.shape}")
    if z is not None and z.shape != u.shape:
        raise ShapeError(f"selective_scan: z shape {z.shape} != u shape {u.shape}")


def _combine(left, right):
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


def _assoc_states(u, delta, A, B, x0=None):
    """All states x_t [B, L, D, N] by a parallel prefix scan (x0 [B, D, N] folded into step 0)."""
    dA = jnp.exp(delta[..., None] * A)  # [B, L, D, N]
    dBu = (delta * u)[..., None] * B[:, :, None, :]  # [B, L, D, N]
    if x0 is not None:
        dBu = dBu.at[:, 0].add(dA[:, 0] * x0)
    _, xs = lax.associative_scan(_combine, (dA, dBu), axis=1)
    return xs


def _scan_associative(u, delta, A, B, C):
    xs = _assoc_states(u, delta, A, B)
    return _contract_n(xs, C)


def _contract_n(x_XxDxN, c_XxN):
    """sum_n x[..., d, n] c[..., n] as a fused multiply-reduce (XLA:CPU runs the einsum form as many
    tiny matrix-vector products, several times slower)."""
    return jnp.sum(x_XxDxN * c_XxN[..., None, :], axis=-1)


def _tm(t):
    return jnp.swapaxes(t, 0, 1)  # [B, L, ...] <-> [L, B, ...] (time-major)


def _decay(d_t, A_NxD):
    """a_t = exp(delta_t A): [..., R, D] step sizes -> [..., R, N, D]."""
    return jnp.exp(d_t[..., None, :] * A_NxD)


def _update(x, a_t, u_t, d_t, B_t):
    """One step of the recurrence on a [R, N, D] state: x_t = a_t x_{t-1} + delta_t u_t B_t."""
    return a_t * x + B_t[:, :, None] * (d_t * u_t)[:, None, :]


def _output_step(A_NxD):
    """The forward scan body over (u_t, delta_t, B_t, C_t): the new state and y_t = <C_t, x_t>."""

    def step(x, inp):
        u_t, d_t, B_t, C_t = inp
        x = _update(x, _decay(d_t, A_NxD), u_t, d_t, B_t)
        return x, jnp.sum(x * C_t[:, :, None], axis=1)

    return step


def _states_tm(u, delta, A_NxD, B):
    """All states x_t, time-major: u, delta [L, B, D], B [L, B, N] -> [L, B, N, D]."""

    def step(x, inp):
        u_t, d_t, B_t = inp
        x = _update(x, _decay(d_t, A_NxD), u_t, d_t, B_t)
        return x, x

    x0 = jnp.zeros((u.shape[1], A_NxD.shape[0], u.shape[2]), u.dtype)
    return lax.scan(step, x0, (u, delta, B))[1]


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _ssm_tm(u, delta, A_NxD, B, C, checkpoint):
    """y_t = <C_t, x_t> over time-major inputs; the carried state is [B, N, D] (D minor, contiguous)."""
    x0 = jnp.zeros((u.shape[1], A_NxD.shape[0], u.shape[2]), u.dtype)
    return lax.scan(_output_step(A_NxD), x0, (u, delta, B, C))[1]


def _ssm_tm_fwd(u, delta, A_NxD, B, C, checkpoint):
    xs = _states_tm(u, delta, A_NxD, B)
    y = jnp.sum(xs * C[:, :, :, None], axis=2)
    return y, (u, delta, A_NxD, B, C, None if checkpoint else xs)


def _ssm_tm_bwd(checkpoint, res, dy):
    """Adjoint of x_t = a_t x_{t-1} + b_t, y_t = <C_t, x_t>, a_t = exp(delta_t A), b_t = delta_t u_t B_t,
    one reverse loop whose per-step outputs are all small:

        g_t = dL/dx_t = C_t dy_t + a_{t+1} g_{t+1}                 (carry h = a_{t+1} g_{t+1})
        d delta_t = sum_n (g_t x_{t-1} a_t A + g_t u_t B_t),  du_t = delta_t sum_n g_t B_t
        dB_t = sum_d g_t delta_t u_t,  dC_t = sum_d dy_t x_t,  dA = sum_{t,b} g_t x_{t-1} a_t delta_t
    """
    u, delta, A_NxD, B, C, xs = res
    if xs is None:  # checkpoint: recompute the states instead of having stored them
        xs = _states_tm(u, delta, A_NxD, B)
    x_prev = jnp.concatenate([jnp.zeros_like(xs[:1]), xs[:-1]], axis=0)

    def step(carry, inp):
        h, dA = carry
        dy_t, C_t, d_t, u_t, B_t, x_t, xp_t = inp
        g = C_t[:, :, None] * dy_t[:, None, :] + h
        a = _decay(d_t, A_NxD)
        gxa = g * xp_t * a
        gB = jnp.sum(g * B_t[:, :, None], axis=1)
        d_delta = jnp.sum(gxa * A_NxD, axis=1) + u_t * gB
        dB = jnp.sum(g * (d_t * u_t)[:, None, :], axis=2)
        dC = jnp.sum(x_t * dy_t[:, None, :], axis=2)
        return (a * g, dA + jnp.sum(gxa * d_t[:, None, :], axis=0)), (d_t * gB, d_delta, dB, dC)

    init = (jnp.zeros(xs.shape[1:], xs.dtype), jnp.zeros(A_NxD.shape, xs.dtype))
    (_, dA), (du, d_delta, dB, dC) = lax.scan(step, init, (dy, C, delta, u, B, xs, x_prev), reverse=True)
    return du, d_delta, dA, dB, dC


_ssm_tm.defvjp(_ssm_tm_fwd, _ssm_tm_bwd)


def _dot(spec, x, y):
    return jnp.einsum(spec, x, y, precision=lax.Precision.HIGHEST)  # full float32 also on GPUs (no TF32)


def _chunks(t, c):
    return t.reshape(t.shape[0] // c, c, *t.shape[1:])  # [L, ...] -> [L / c, c, ...]


def _ssm_chunked_fwd_impl(u, delta, A_NxD, B, C, chunk, reverse):
    """y [L, R, D] and the state before every chunk (in processing order) [L / c, R, N, D]; time-major
    inputs, L % c == 0."""

    def body(x, inp):
        # forward only (no states kept inside the chunk): exp, update and the C contraction per step
        # (less CPU than forming a, b and y chunk-wide)
        x_end, y_c = lax.scan(_output_step(A_NxD), x, inp, reverse=reverse)
        return x_end, (y_c, x)

    x0 = jnp.zeros((u.shape[1], A_NxD.shape[0], u.shape[2]), u.dtype)
    _, (y, x_starts) = lax.scan(body, x0, tuple(_chunks(t, chunk) for t in (u, delta, B, C)), reverse=reverse)
    return y.reshape(u.shape), x_starts


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _ssm_chunked_tm(u, delta, A_NxD, B, C, chunk, reverse):
    """Same as _ssm_tm (run backwards in time when reverse), storing only chunk-start states; the
    backward recomputes one chunk at a time."""
    return _ssm_chunked_fwd_impl(u, delta, A_NxD, B, C, chunk, reverse)[0]


def _ssm_chunked_fwd(u, delta, A_NxD, B, C, chunk, reverse):
    y, x_starts = _ssm_chunked_fwd_impl(u, delta, A_NxD, B, C, chunk, reverse)
    return y, (u, delta, A_NxD, B, C, x_starts)


def _ssm_chunked_bwd(chunk, reverse, res, dy):
    """The adjoint of _ssm_tm_bwd, chunk by chunk in reverse processing order. Per chunk: a = exp(delta A)
    for all its steps at once; recompute its states from its start state (one fused kernel per step);
    run g_t = C_t dy_t + a_{t+1} g_{t+1} backwards over it (one fused kernel per step, carrying
    h = a_{t+1} g_{t+1} across chunks); then every gradient of the chunk as whole-chunk ops
    (du, d delta, dB, dC and the chunk's share of dA). Per-step loops of a single kernel each and
    chunk-wide contractions take less CPU than contracting inside the step. With reverse the time
    order flips: the neighbour "t + 1" is t - 1."""
    u, delta, A_NxD, B, C, x_starts = res

    def body(carry, inp):
        h, dA = carry
        u_c, d_c, B_c, C_c, dy_c, x0 = inp
        a = _decay(d_c, A_NxD)  # [c, R, N, D], read by both loops below

        def xstep(x, inp):  # recompute the chunk's states (b_t formed in the step from [R, .] inputs)
            x = _update(x, *inp)
            return x, x

        _, xs = lax.scan(xstep, x0, (a, u_c, d_c, B_c), reverse=reverse)
        if reverse:  # the state before step t (in processing order) is x_{t+1}
            x_prev = jnp.concatenate([xs[1:], x0[None]], 0)
        else:
            x_prev = jnp.concatenate([x0[None], xs[:-1]], 0)

        def gstep(h, inp):
            C_t, dy_t, a_t = inp
            g = C_t[:, :, None] * dy_t[:, None, :] + h
            return a_t * g, g

        h, g = lax.scan(gstep, h, (C_c, dy_c, a), reverse=not reverse)
        gxa = g * x_prev * a
        # the three contractions with a per-(t, row) vector as batched mat-vecs (less CPU than
        # multiply + sum); the two with A or a sum over (t, row) as multiply + sum (faster so)
        gB = _dot("crnd,crn->crd", g, B_c)
        dB = _dot("crnd,crd->crn", g, d_c * u_c)
        dC = _dot("crnd,crd->crn", xs, dy_c)
        d_delta = jnp.sum(gxa * A_NxD, axis=-2) + u_c * gB
        dA = dA + jnp.sum(gxa * d_c[..., None, :], axis=(0, 1))
        return (h, dA), (d_c * gB, d_delta, dB, dC)

    init = (jnp.zeros(x_starts.shape[1:], u.dtype), jnp.zeros(A_NxD.shape, u.dtype))
    xs_in = tuple(_chunks(t, chunk) for t in (u, delta, B, C, dy)) + (x_starts,)
    (_, dA), (du, d_delta, dB, dC) = lax.scan(body, init, xs_in, reverse=not reverse)
    unchunk = lambda t: t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
    return unchunk(du), unchunk(d_delta), dA, unchunk(dB), unchunk(dC)


_ssm_chunked_tm.defvjp(_ssm_chunked_fwd, _ssm_chunked_bwd)


GROUP_STATE_ELEMS = 16384  # batch rows per group: the per-step state [rows, N, D] is about 64 KiB


def batch_groups(batch: int, d_state: int, channels: int, backend: str | None = None) -> int:
    """Number of batch groups the chunked sequential scan runs one after another: on CPU the largest
    divisor of `batch` with rows * N * D <= GROUP_STATE_ELEMS (at least one row), so that a chunk's
    [c, rows, N, D] buffers stay in cache (for B=32, N=16, D=256 that is 8 groups of 4 rows, which
    trained faster on CPU than 4 groups of 8 or 16 groups of 2).
    On any other backend (default: jax.default_backend()) one group: there every scan step is a
    kernel launch, and groups run one after another would multiply the launches with nothing to gain
    from a cache (a reasoned default, not measured: no GPU was available; the grouping does not
    change the results)."""
    if (backend or jax.default_backend()) != "cpu":
        return 1
    rows = max(1, GROUP_STATE_ELEMS // (d_state * channels))
    rows = max(r for r in range(1, min(rows, batch) + 1) if batch % r == 0)
    return batch // rows


def scan_grouped(
    u_GxLxRxD, delta_GxLxRxD, A_DxN, B_GxLxRxN, C_GxLxRxN, *, chunk: int = 16, reverse: bool = False
) -> jax.Array:
    """The chunked sequential SSM (no D skip, no gate) on inputs already laid out as batch groups,
    time-major inside a group: [G, L, R, .] -> y [G, L, R, D]. The groups run one after another
    (lax.map); reverse=True runs the recurrence from t = L - 1 down to 0 (the reverse direction of
    BiMamba without flipping any array). This is the layout the encoder keeps its tokens in, so the
    scan needs no transposes."""
    G, L, R, Dd = u_GxLxRxD.shape
    chunk = min(chunk, L)
    pad = (-L) % chunk
    f = jnp.result_type(u_GxLxRxD, delta_GxLxRxD, A_DxN, B_GxLxRxN, C_GxLxRxN)
    ins = [t.astype(f) for t in (u_GxLxRxD, delta_GxLxRxD, B_GxLxRxN, C_GxLxRxN)]
    if pad:  # delta = u = B = C = 0 at the end (the start when reverse): the state carries through
        # unchanged and y there is dropped
        widths = ((0, 0), (pad, 0) if reverse else (0, pad), (0, 0), (0, 0))
        ins = [jnp.pad(t, widths) for t in ins]
    A_NxD = A_DxN.T.astype(f)
    one = lambda t: _ssm_chunked_tm(*t[:2], A_NxD, *t[2:], chunk, reverse)
    y = one([t[0] for t in ins]) if G == 1 else lax.map(one, ins)
    y = y.reshape(G, L + pad, R, Dd)
    return y[:, pad:] if reverse else y[:, :L]


def _scan_sequential_chunked(u, delta, A, B, C, chunk, groups=None):
    Bn, L, Dd = u.shape
    G = batch_groups(Bn, A.shape[1], Dd) if groups is None else groups
    grp = lambda t: jnp.transpose(t.reshape(G, Bn // G, L, t.shape[-1]), (0, 2, 1, 3))  # [G, L, R, .]
    y = scan_grouped(grp(u), grp(delta), A, grp(B), grp(C), chunk=chunk)
    return jnp.transpose(y, (0, 2, 1, 3)).reshape(Bn, L, Dd)


def _scan_sequential(u, delta, A, B, C, checkpoint):
    # the hand-written backward (above) is faster on CPU than autodiff of the same loop, and the
    # [B, N, D] state layout (D minor, contiguous) faster than [B, D, N]
    f = jnp.result_type(u, delta, A, B, C)
    y = _ssm_tm(_tm(u).astype(f), _tm(delta).astype(f), A.T.astype(f), _tm(B).astype(f), _tm(C).astype(f), checkpoint)
    return _tm(y)


def _scan_chunked(u, delta, A, B, C, chunk, checkpoint):
    Bn, L, Dd = u.shape
    pad = (-L) % chunk
    if pad:  # delta = 0 gives dA = 1, dBu = 0: padded steps carry the state unchanged
        padf = lambda t: jnp.pad(t, ((0, 0), (0, pad), (0, 0)))
        u, delta, B, C = padf(u), padf(delta), padf(B), padf(C)
    nc = (L + pad) // chunk
    split = lambda t: jnp.swapaxes(t.reshape(Bn, nc, chunk, t.shape[-1]), 0, 1)  # [nc, B, c, .]

    def body(x, inp):
        u_c, d_c, B_c, C_c = inp
        xs = _assoc_states(u_c, d_c, A, B_c, x0=x)
        return xs[:, -1], _contract_n(xs, C_c)

    if checkpoint:
        body = jax.checkpoint(body)
    x0 = jnp.zeros((Bn, Dd, A.shape[1]), jnp.result_type(u, delta, A, B))
    _, ys = lax.scan(body, x0, (split(u), split(delta), split(B), split(C)))
    ys = jnp.swapaxes(ys, 0, 1).reshape(Bn, nc * chunk, Dd)
    return ys[:, :L]


def selective_scan(
    u_BxLxD,
    delta_BxLxD,
    A_DxN,
    B_BxLxN,
    C_BxLxN,
    D_D=None,
    z_BxLxD=None,
    *,
    mode: str = "associative",
    chunk: int = 0,
    checkpoint: bool = False,
) -> jax.Array:
    """Selective scan y = SSM(u) (+ D u) (* silu(z)); see the module docstring for the recurrence.

    Args:
      u_BxLxD: input sequence. delta_BxLxD: positive step sizes (softplus already applied).
      A_DxN: (negative) state matrix diagonal. B_BxLxN, C_BxLxN: input-dependent projections.
      D_D: skip connection (optional). z_BxLxD: gate (optional).
      mode: "associative" (parallel prefix) or "sequential" (lax.scan over time).
      chunk: > 0 with mode "sequential": keep only chunk-start states and recompute one chunk at a
        time in the backward (fastest on CPU, least memory); with mode "associative": associative scans
        inside chunks of this length, sequential across.
      checkpoint: recompute the states in the backward pass (jax.checkpoint per step/chunk; a
        sequential chunk always recomputes).
    Returns:
      y [B, L, D].
    """
    if mode not in SCAN_MODES:
        raise ConfigError(f"selective_scan: mode must be one of {SCAN_MODES}, got {mode!r}")
    if chunk < 0:
        raise ConfigError(f"selective_scan: chunk must be >= 0, got {chunk}")
    _check(u_BxLxD, delta_BxLxD, A_DxN, B_BxLxN, C_BxLxN, D_D, z_BxLxD)
    args = (u_BxLxD, delta_BxLxD, A_DxN, B_BxLxN, C_BxLxN)
    if chunk and mode == "sequential":
        y = _scan_sequential_chunked(*args, min(chunk, u_BxLxD.shape[1]))
    elif chunk and chunk < u_BxLxD.shape[1]:
        y = _scan_chunked(*args, chunk, checkpoint)
    elif mode == "associative":
        y = (jax.checkpoint(_scan_associative) if checkpoint else _scan_associative)(*args)
    else:
        y = _scan_sequential(*args, checkpoint)
    if D_D is not None:
        y = y + D_D * u_BxLxD
    if z_BxLxD is not None:
        y = y * jax.nn.silu(z_BxLxD)
    return y


selective_scan_jit = jax.jit(selective_scan, static_argnames=("mode", "chunk", "checkpoint"))
