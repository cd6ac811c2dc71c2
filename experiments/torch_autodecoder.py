"""Per-sample baselines for experiments/bench_autodecoder.py (not imported by jaxsys/ or tests/):

- `numpy_microbatch`: the reference micro-batch rule as a plain numpy loop with a hand-written
  backward (batched forward GEMM, then per-sample rank-1 updates in order; see
  jaxsys/autodecoder/schedules.py for the rule).
- `torch_microbatch`: the same loop in PyTorch (in-place addr_/mv, no autograd).
- `torch_autograd_strict`: a textbook PyTorch per-sample loop: forward one sample, loss.backward(),
  SGD step on W, b and that sample's latent.

Inputs are plain arrays: Ws/bs lists (W [out, in]), Z [S, d], enc [N, E], t [N], s [N].
"""

import math

import numpy as np


def encode_np(p: np.ndarray, K: int) -> np.ndarray:
    cols = [p[:, 0], p[:, 1]]
    for k in range(K):
        w = (2.0**k) * 2 * math.pi
        cols += [np.sin(w * p[:, 0]), np.cos(w * p[:, 0]), np.sin(w * p[:, 1]), np.cos(w * p[:, 1])]
    return np.stack(cols, 1)


def numpy_microbatch(Ws, bs, Z, enc, t, s, B, lr_w, lr_z, lambda_z, lambda_w):
    L = len(Ws)
    d = Z.shape[1]
    c = 1.0 - lr_w * lambda_w
    for m in range(0, len(t), B):
        U = np.concatenate([Z[s[m : m + B]], enc[m : m + B]], 1)
        acts = [U]
        a = U
        for l in range(L):
            h = a @ Ws[l].T + bs[l]
            if l < L - 1:
                a = np.tanh(h)
                acts.append(a)
        r = h[:, 0] - t[m : m + B]
        for j in range(len(r)):
            delta = r[j : j + 1]
            for l in reversed(range(L)):
                a = acts[l][j]
                W = Ws[l]
                if lambda_w:
                    W *= c
                W -= lr_w * np.outer(delta, a)
                bs[l] -= lr_w * delta
                g = W.T @ delta
                delta = g * (1 - a * a) if l > 0 else g
            z = Z[s[m + j]]
            z -= lr_z * (delta[:d] + lambda_z * z)
    return Ws, bs, Z


def torch_microbatch(Ws, bs, Z, enc, t, s, B, lr_w, lr_z, lambda_z, lambda_w):
    import torch

    with torch.no_grad():
        Ws = [torch.tensor(W) for W in Ws]
        bs = [torch.tensor(b) for b in bs]
        Z = torch.tensor(Z)
        enc = torch.tensor(enc)
        t = torch.tensor(t)
        s = torch.tensor(s, dtype=torch.long)
        L = len(Ws)
        d = Z.shape[1]
        c = 1.0 - lr_w * lambda_w
        for m in range(0, len(t), B):
            U = torch.cat([Z[s[m : m + B]], enc[m : m + B]], 1)
            acts = [U]
            a = U
            for l in range(L):
                h = a @ Ws[l].T + bs[l]
                if l < L - 1:
                    a = torch.tanh(h)
                    acts.append(a)
            r = h[:, 0] - t[m : m + B]
            for j in range(r.shape[0]):
                delta = r[j : j + 1]
                for l in reversed(range(L)):
                    a = acts[l][j]
                    W = Ws[l]
                    if lambda_w:
                        W.mul_(c)
                    W.addr_(delta, a, alpha=-lr_w)
                    bs[l].add_(delta, alpha=-lr_w)
                    g = W.T.mv(delta)
                    delta = g * (1 - a * a) if l > 0 else g
                z = Z[s[m + j]]
                z.sub_(lr_z * (delta[:d] + lambda_z * z))
        return [W.numpy() for W in Ws], [b.numpy() for b in bs], Z.numpy()


def torch_autograd_strict(Ws, bs, Z, enc, t, s, lr_w, lr_z, lambda_z, lambda_w):
    import torch

    Ws = [torch.tensor(W, requires_grad=True) for W in Ws]
    bs = [torch.tensor(b, requires_grad=True) for b in bs]
    Z = torch.tensor(Z)
    enc = torch.tensor(enc)
    t = torch.tensor(t)
    L = len(Ws)
    for j in range(len(t)):
        z = Z[int(s[j])].clone().requires_grad_(True)
        a = torch.cat([z, enc[j]])
        for l in range(L):
            h = Ws[l] @ a + bs[l]
            a = torch.tanh(h) if l < L - 1 else h
        loss = 0.5 * (a[0] - t[j]) ** 2 + 0.5 * lambda_z * (z * z).sum()
        if lambda_w:
            loss = loss + 0.5 * lambda_w * sum((W * W).sum() for W in Ws)
        grads = torch.autograd.grad(loss, Ws + bs + [z])
        with torch.no_grad():
            for p, g in zip(Ws + bs, grads):
                p.sub_(lr_w * g)
            Z[int(s[j])] = z - lr_z * grads[-1]
    return [W.detach().numpy() for W in Ws], [b.detach().numpy() for b in bs], Z.numpy()
