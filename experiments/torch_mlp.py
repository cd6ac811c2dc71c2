"""PyTorch CPU baseline of the MLP train step (used by bench_mlp.py; torch is the optional `bench` extra).

Same network as jaxsys.mlp: Linear-ReLU-...-Linear with weights [out x in], softmax cross-entropy
(mean over the batch), torch.optim.Adam (lr 1e-3, b 0.9/0.999, eps 1e-8), float32.
"""

import time

import torch
import torch.nn.functional as F


def make_mlp(sizes, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def make_step(sizes, compiled: bool = False, lr: float = 1e-3, seed: int = 0):
    """A closure step(x, y) -> loss tensor running one Adam step (eager, or via torch.compile)."""
    model = make_mlp(sizes, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    if compiled:
        step = torch.compile(step)
    return step


def time_matmuls(shapes, reps: int) -> list[float]:
    """Seconds per call of torch.mm for each (M, K, N) shape (MKL/oneDNN sgemm on CPU)."""
    out = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        out.append((time.perf_counter() - t0) / reps)
    return out
