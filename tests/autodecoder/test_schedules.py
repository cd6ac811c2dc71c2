"""strict / microbatch / batched vs plain numpy per-sample loops written here independently."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.autodecoder import model as M
from jaxsys.autodecoder import schedules as S
from jaxsys.autodecoder.sampler import SamplerConfig, sample_jit

pytestmark = pytest.mark.x64  # float64: compared with float64 references at tight tolerances

jax.config.update("jax_enable_x64", True)

MCFG = M.ModelConfig(latent_dim=4, num_freqs=2, hidden=(12, 10), dtype="float64")
NUM_SHAPES = 3
B = 16
NUM_MB = 3


def np_encode(p, K):
    cols = [p[:, 0], p[:, 1]]
    for k in range(K):
        w = (2.0**k) * 2 * math.pi
        cols += [np.sin(w * p[:, 0]), np.cos(w * p[:, 0]), np.sin(w * p[:, 1]), np.cos(w * p[:, 1])]
    return np.stack(cols, axis=1)


def np_forward(Ws, bs, u):
    acts = [u]
    a = u
    for l, (W, b) in enumerate(zip(Ws, bs)):
        h = W @ a + b
        if l < len(Ws) - 1:
            a = np.tanh(h)
            acts.append(a)
    return h[0], acts


def np_microbatch(Ws, bs, Z, p, t, s, hp):
    """The reference rule in plain numpy: batched forward, then per-sample updates in order."""
    Ws = [W.copy() for W in Ws]
    bs = [b.copy() for b in bs]
    Z = Z.copy()
    enc = np_encode(p, MCFG.num_freqs)
    n = len(t)
    stored = [np_forward(Ws, bs, np.concatenate([Z[s[j]], enc[j]])) for j in range(n)]
    for j in range(n):
        y, acts = stored[j]
        delta = np.array([y - t[j]])
        for l in reversed(range(len(Ws))):
            Ws[l] -= hp.lr_w * hp.lambda_w * Ws[l]
            for o in range(Ws[l].shape[0]):
                for i in range(Ws[l].shape[1]):
                    Ws[l][o, i] -= hp.lr_w * delta[o] * acts[l][i]
            bs[l] -= hp.lr_w * delta
            g = Ws[l].T @ delta
            delta = g * (1 - acts[l] ** 2) if l > 0 else g
        z = Z[s[j]]
        Z[s[j]] = z - hp.lr_z * (delta[: MCFG.latent_dim] + hp.lambda_z * z)
    return Ws, bs, Z


def np_strict(Ws, bs, Z, p, t, s, hp):
    Ws = [W.copy() for W in Ws]
    bs = [b.copy() for b in bs]
    Z = Z.copy()
    enc = np_encode(p, MCFG.num_freqs)
    for j in range(len(t)):
        z = Z[s[j]].copy()
        y, acts = np_forward(Ws, bs, np.concatenate([z, enc[j]]))
        delta = np.array([y - t[j]])
        grads = []
        for l in reversed(range(len(Ws))):
            grads.append((l, np.outer(delta, acts[l]) + hp.lambda_w * Ws[l], delta.copy()))
            g = Ws[l].T @ delta
            delta = g * (1 - acts[l] ** 2) if l > 0 else g
        for l, gW, gb in grads:
            Ws[l] = Ws[l] - hp.lr_w * gW
            bs[l] = bs[l] - hp.lr_w * gb
        Z[s[j]] = z - hp.lr_z * (delta[: MCFG.latent_dim] + hp.lambda_z * z)
    return Ws, bs, Z


def _setup(seed=0):
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    params = M.init_params(k1, MCFG)
    # larger latents than the N(0, 0.01) default so the latent path matters in the comparison
    Z = 0.5 * jax.random.normal(k2, (NUM_SHAPES, MCFG.latent_dim), jnp.float64)
    batches = [sample_jit(k, B, SamplerConfig(), jnp.float64) for k in jax.random.split(k3, NUM_MB)]
    return params, Z, batches


# large learning rates so that the order of updates changes the result well above 1e-10
HP = dict(lr_w=0.05, lr_z=0.1, lambda_z=0.3, lambda_w=0.02)


@pytest.mark.parametrize(
    "name,chunk,lambda_w",
    [
        ("microbatch", 1, 0.02),
        ("microbatch", 4, 0.02),
        ("microbatch", 16, 0.0),
        ("microbatch", 8, 0.02),
        ("strict", 1, 0.02),
        ("strict", 1, 0.0),
    ],
)
def test_schedule_matches_numpy_loop(name, chunk, lambda_w):
    hp = S.ScheduleConfig(name=name, chunk=chunk, unroll=2, **{**HP, "lambda_w": lambda_w})
    params, Z, batches = _setup()
    Ws = [np.asarray(W) for W in params["W"]]
    bs = [np.asarray(b) for b in params["b"]]
    Zn = np.asarray(Z)
    ref = np_microbatch if name == "microbatch" else np_strict
    step = jax.jit(lambda P, Z, b: S.update(P, Z, (), b, MCFG, hp)[:2])
    P = params
    for b in batches:
        P, Z = step(P, Z, b)
        Ws, bs, Zn = ref(Ws, bs, Zn, np.asarray(b.p), np.asarray(b.t), np.asarray(b.s), hp)
    chex.assert_trees_all_close(P, {"W": Ws, "b": bs}, atol=1e-10, rtol=0)
    np.testing.assert_allclose(np.asarray(Z), Zn, atol=1e-10, rtol=0)
    # the comparison is meaningful: parameters moved far more than the tolerance
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree_util.tree_leaves(P), jax.tree_util.tree_leaves(params))
    )
    assert moved > 1e-3


def test_microbatch_differs_from_strict_and_from_wrong_order():
    """The three rules give different parameters (so the parity tests can tell them apart)."""
    params, Z, batches = _setup(1)
    b = batches[0]
    hp = S.ScheduleConfig(name="microbatch", chunk=4, **HP)
    upd = jax.jit(S.update, static_argnums=(4, 5))
    Pm, Zm = upd(params, Z, (), b, MCFG, hp)[:2]
    Ps, Zs = upd(params, Z, (), b, MCFG, dataclasses.replace(hp, name="strict"))[:2]
    assert float(jnp.max(jnp.abs(Pm["W"][0] - Ps["W"][0]))) > 1e-6
    # backprop with the pre-update weights (the order the rule does NOT use) gives another result
    Ws = [np.asarray(W) for W in params["W"]]
    bs = [np.asarray(x) for x in params["b"]]
    _, _, Zn = np_microbatch(
        Ws, bs, np.asarray(Z), np.asarray(b.p), np.asarray(b.t), np.asarray(b.s), dataclasses.replace(hp, lr_w=1e-12)
    )
    assert float(np.max(np.abs(np.asarray(Zm) - Zn))) > 1e-6


def test_batched_grad_matches_jax_grad_and_loss_drops():
    params, Z, batches = _setup(2)
    b = batches[0]

    def loss_fn(tree):
        return S.batch_loss_and_grads(tree["params"], tree["Z"], b, MCFG, 0.3, 0.02)[0]

    _, (dP, dZ), _ = jax.jit(lambda P, Z: S.batch_loss_and_grads(P, Z, b, MCFG, 0.3, 0.02))(params, Z)
    ref = jax.jit(jax.grad(loss_fn))({"params": params, "Z": Z})
    chex.assert_trees_all_close({"params": dP, "Z": dZ}, ref, atol=1e-12, rtol=1e-10)

    hp = S.ScheduleConfig(name="batched", batched_lr=1e-2)
    opt = S.init_opt(params, Z, hp)
    step = jax.jit(lambda P, Z, o: S.update(P, Z, o, b, MCFG, hp))
    l0 = None
    for _ in range(30):
        params, Z, opt, loss = step(params, Z, opt)
        l0 = float(jnp.mean(loss)) if l0 is None else l0
    assert float(jnp.mean(loss)) < 0.5 * l0


def test_bad_schedule_config():
    from jaxsys.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown schedule"):
        S.ScheduleConfig(name="adamw")
    with pytest.raises(ConfigError, match="lr_w"):
        S.ScheduleConfig(lr_w=0)
