"""PyTorch CPU implementation of the microgpt model, for baselines (never imported by jaxsys/).

Same architecture and parameter names as jaxsys.gpt.model: no biases, rmsnorm without gain
(eps 1e-5), causal multi-head attention, ReLU MLP (4E), untied lm_head, no final norm. Attention is
either written out ("manual": masked softmax(q k^T / sqrt(d)) v) or torch's fused
`scaled_dot_product_attention` ("sdpa"). Parameters can be loaded from the same name -> array dict
as the JAX model, so both start from identical weights.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

LAYER_MATRICES = ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")


def param_shapes(vocab_size: int, n_embd: int, n_layer: int, block_size: int) -> dict:
    e, v = n_embd, vocab_size
    shapes = {"wte": (v, e), "wpe": (block_size, e), "lm_head": (v, e)}
    for i in range(n_layer):
        for n in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
            shapes[f"layer{i}.{n}"] = (e, e)
        shapes[f"layer{i}.mlp_fc1"] = (4 * e, e)
        shapes[f"layer{i}.mlp_fc2"] = (e, 4 * e)
    return shapes


def _rmsnorm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


class TorchGPT(torch.nn.Module):
    def __init__(
        self,
        vocab_size: int,
        n_embd: int,
        n_head: int,
        n_layer: int,
        block_size: int,
        attn: str = "sdpa",
        params: dict | None = None,
        seed: int = 0,
        dtype=torch.float32,
    ):
        super().__init__()
        if attn not in ("sdpa", "manual"):
            raise ValueError(f"attn must be 'sdpa' or 'manual', got {attn!r}")
        self.n_head, self.n_layer, self.attn = n_head, n_layer, attn
        shapes = param_shapes(vocab_size, n_embd, n_layer, block_size)
        g = torch.Generator().manual_seed(seed)
        self.p = torch.nn.ParameterDict()
        for name, shape in shapes.items():
            if params is not None:
                t = torch.tensor(np.asarray(params[name], np.float64), dtype=dtype)
                if tuple(t.shape) != shape:
                    raise ValueError(f"{name}: shape {tuple(t.shape)} != {shape}")
            else:
                t = torch.randn(shape, generator=g, dtype=dtype) * 0.08
            # ParameterDict keys may not contain '.'
            self.p[name.replace(".", "_")] = torch.nn.Parameter(t)
        self.register_buffer("causal", torch.ones(block_size, block_size, dtype=torch.bool).tril(), persistent=False)

    def w(self, name: str) -> torch.Tensor:
        return self.p[name.replace(".", "_")]

    def state_numpy(self) -> dict:
        return {
            k.replace("_attn", ".attn").replace("_mlp", ".mlp"): v.detach().cpu().numpy() for k, v in self.p.items()
        }

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        H = self.n_head
        x = _rmsnorm(self.w("wte")[idx] + self.w("wpe")[:T])
        E = x.shape[-1]
        D = E // H
        for i in range(self.n_layer):
            h = _rmsnorm(x)
            q = (h @ self.w(f"layer{i}.attn_wq").T).view(B, T, H, D).transpose(1, 2)
            k = (h @ self.w(f"layer{i}.attn_wk").T).view(B, T, H, D).transpose(1, 2)
            v = (h @ self.w(f"layer{i}.attn_wv").T).view(B, T, H, D).transpose(1, 2)
            if self.attn == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
                s = s.masked_fill(~self.causal[:T, :T], float("-inf"))
                o = torch.softmax(s, dim=-1) @ v
            o = o.transpose(1, 2).reshape(B, T, E)
            x = x + o @ self.w(f"layer{i}.attn_wo").T
            h = _rmsnorm(x)
            x = x + torch.relu(h @ self.w(f"layer{i}.mlp_fc1").T) @ self.w(f"layer{i}.mlp_fc2").T
        return x @ self.w("lm_head").T

    def loss(self, idx, targets, mask=None) -> torch.Tensor:
        """Mean cross-entropy over unmasked positions."""
        logits = self(idx)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        if mask is None:
            return nll.mean()
        m = mask.reshape(-1).to(nll.dtype)
        return (nll * m).sum() / m.sum().clamp_min(1)


def lr_lambda(schedule: str, steps: int, warmup: int = 0, lr: float = 1.0, min_lr: float = 0.0):
    """Multiplier of the base lr at update t (0-based), matching jaxsys.gpt.train schedules
    (optax.linear_schedule / warmup_cosine_decay_schedule / constant)."""

    def f(t: int) -> float:
        if schedule == "linear":
            return max(0.0, 1.0 - t / steps)
        if schedule == "cosine":
            if t < warmup:
                return t / warmup
            frac = min(max(t - warmup, 0) / max(steps - warmup, 1), 1.0)
            return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))) / lr
        return 1.0

    return f


class TorchTrainer:
    """Adam (no weight decay) with the jaxsys schedules, optional global-norm clipping."""

    def __init__(
        self,
        model: TorchGPT,
        lr: float,
        betas=(0.85, 0.99),
        eps: float = 1e-8,
        schedule: str = "linear",
        steps: int = 1000,
        warmup: int = 0,
        min_lr: float = 0.0,
        grad_clip: float = 0.0,
        compiled: bool = False,
    ):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(schedule, steps, warmup, lr, min_lr))
        self.grad_clip = grad_clip
        self.loss_fn = torch.compile(model.loss) if compiled else model.loss

    def step(self, idx, targets, mask=None) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(idx, targets, mask)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, batches) -> float:
        tot = cnt = 0.0
        for b in batches:
            idx, tg, m = (torch.from_numpy(np.asarray(a)) for a in b)
            idx, tg = idx.long(), tg.long()
            loss = self.model.loss(idx, tg, m)
            n = float(m.sum())
            tot += float(loss) * n
            cnt += n
        return tot / cnt
