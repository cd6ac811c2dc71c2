"""PyTorch CPU port of Mamba-GINR (the architecture of jaxsys/ginr/model.py), the baseline for
experiments/bench_ginr.py and experiments/ginr_quality.py.

The Mamba mixer follows mamba_ssm's `Mamba` with its reference (non-CUDA) path: the selective scan is
`selective_scan_ref`, a Python loop over the sequence (x = deltaA[:, :, i] * x + deltaB_u[:, :, i];
y_i = einsum('bdn,bn->bd', x, C[:, :, i])). Block = mamba_ssm `Block` with fused_add_norm=False.
torch is an optional dependency (`pip install .[bench]`); jaxsys never imports this file.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# How the scan loop reads step i of deltaA / deltaB_u / C. "unbind" (default): split each tensor once
# with torch.unbind, whose backward is one stack. "index": mamba_ssm's literal `deltaA[:, :, i]`, whose
# backward (SelectBackward) materialises a zero tensor of the full [b, d, l, n] size per step and adds
# it to the accumulated gradient: O(l^2) memory traffic, 67% of the fast step's CPU time in fill_
# (torch.profiler, 2026-12-04), about 10x slower overall. Same values and gradients either way.
SCAN_STEP_ACCESS = "unbind"


def selective_scan_ref(u, delta, A, B, C, D, z, access=None):
    """u, delta, z [b, d, l]; A [d, n]; B, C [b, n, l]; D [d] -> [b, d, l] (mamba_ssm reference)."""
    access = access or SCAN_STEP_ACCESS
    delta = F.softplus(delta)
    b, d, l = u.shape
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = A.new_zeros((b, d, A.shape[1]))
    ys = []
    if access == "unbind":
        steps = zip(deltaA.unbind(2), deltaB_u.unbind(2), C.unbind(2))
    elif access == "index":
        steps = ((deltaA[:, :, i], deltaB_u[:, :, i], C[:, :, i]) for i in range(l))
    else:
        raise ValueError(f"access must be 'unbind' or 'index', got {access!r}")
    for dA_i, dBu_i, C_i in steps:
        x = dA_i * x + dBu_i
        ys.append(torch.einsum("bdn,bn->bd", x, C_i))
    y = torch.stack(ys, dim=2) + u * D[None, :, None]
    return y * F.silu(z)


class Mamba(nn.Module):
    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state, self.d_conv = d_state, d_conv
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden, inference_params=None):
        L = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # [b, 2di, l]
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :L])
        dbc = self.x_proj(x.transpose(1, 2))  # [b, l, r + 2n]
        dt, B, C = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # bias added as delta_bias
        dt = dt + self.dt_proj.bias[None, :, None]
        A = -torch.exp(self.A_log.float())
        y = selective_scan_ref(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z)
        return self.out_proj(y.transpose(1, 2))


class BiMamba(nn.Module):
    def __init__(self, d_model, **kw):
        super().__init__()
        self.f_mamba, self.r_mamba = Mamba(d_model, **kw), Mamba(d_model, **kw)

    def forward(self, x, inference_params=None, **kwargs):
        fwd = self.f_mamba(x)
        bwd = torch.flip(self.r_mamba(torch.flip(x, dims=[1])), dims=[1])
        return (fwd + bwd) / 2


class Block(nn.Module):
    def __init__(self, dim, ff_dim):
        super().__init__()
        self.norm, self.mixer = nn.LayerNorm(dim), BiMamba(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))

    def forward(self, x, residual=None):
        residual = x if residual is None else x + residual
        h = self.mixer(self.norm(residual), inference_params=None)
        residual = h + residual
        return self.mlp(self.norm2(residual)), residual


def fourier(p, num_freqs):
    """Same layout as jaxsys.nn.fourier_features: [p, sin/cos(2^k 2 pi p_c) for k, for c]."""
    w = (2.0 ** torch.arange(num_freqs, dtype=p.dtype)) * (2 * math.pi)
    ang = w[:, None] * p[..., None, :]
    sc = torch.stack([torch.sin(ang), torch.cos(ang)], -1).reshape(*p.shape[:-1], -1)
    return torch.cat([p, sc], -1)


def pixel_grid(n):
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([yy, xx], -1).reshape(-1, 2)


class MambaGINR(nn.Module):
    def __init__(
        self, image_size=32, patch_size=4, dim=128, num_lp=16, depth=3, hidden=64, ff_mult=4, hypo_blocks=2, num_freqs=4
    ):
        super().__init__()
        self.p, self.g, self.num_freqs = patch_size, image_size // patch_size, num_freqs
        P, M = self.g**2, num_lp
        F_ = 2 * (2 * num_freqs + 1)
        self.patch_embed = nn.Linear(patch_size * patch_size * 3, dim)
        self.pos_proj = nn.Linear(F_, dim)
        pe = torch.zeros(M, dim)
        pos = torch.arange(M, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, dim, 2).float() * -(math.log(10000.0) / dim))
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.lp = nn.Parameter(pe)
        T = P + M
        lp_idx = torch.linspace(0, T - 1, M).long()
        perm = torch.full((T,), -1, dtype=torch.long)
        perm[lp_idx] = torch.arange(P, T)
        perm[perm == -1] = torch.arange(P)
        self.register_buffer("perm", perm)
        self.register_buffer("lp_idx", lp_idx)
        self.blocks = nn.ModuleList([Block(dim, ff_mult * dim) for _ in range(depth)])
        self.norm_f = nn.LayerNorm(dim)
        H = hidden
        self.q1, self.q2 = nn.Linear(F_, H), nn.Linear(H, H)
        self.k, self.v, self.o = nn.Linear(dim, H), nn.Linear(dim, H), nn.Linear(H, H)
        self.hidden = H
        self.inp = nn.Linear(F_ + H, H)
        self.hblocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, H)) for _ in range(hypo_blocks)]
        )
        self.out = nn.Linear(H, 3)

    def encode(self, images):  # [b, S, S, 3] in [0, 1]
        b, S = images.shape[0], images.shape[1]
        x = (images * 2 - 1).reshape(b, self.g, self.p, self.g, self.p, 3).permute(0, 1, 3, 2, 4, 5)
        tok = self.patch_embed(x.reshape(b, self.g * self.g, -1))
        tok = tok + self.pos_proj(fourier(pixel_grid(self.g), self.num_freqs))
        seq = torch.cat([tok, self.lp.expand(b, -1, -1)], 1)[:, self.perm]
        h, res = seq, None
        for blk in self.blocks:
            h, res = blk(h, res)
        return self.norm_f(h + res)[:, self.lp_idx]

    def decode(self, lp, coords):
        f = fourier(coords, self.num_freqs)
        q = self.q2(F.relu(self.q1(f)))
        a = torch.softmax(torch.einsum("bnd,bmd->bnm", q, self.k(lp)) / math.sqrt(self.hidden), -1)
        mod = self.o(torch.einsum("bnm,bmd->bnd", a, self.v(lp)))
        h = F.relu(self.inp(torch.cat([f, mod], -1)))
        for blk in self.hblocks:
            h = h + blk(h)
        return torch.sigmoid(self.out(h))

    def forward(self, images, coords):
        return self.decode(self.encode(images), coords)


CONFIGS = {
    "fast": dict(dim=128, num_lp=16, depth=3, hidden=64),
    "balanced": dict(dim=256, num_lp=32, depth=4, hidden=128),
    "high": dict(dim=512, num_lp=64, depth=6, hidden=256),
}


def make(name: str, **kw) -> MambaGINR:
    return MambaGINR(**{**CONFIGS[name], **kw})


def make_optimizer(model, lr=1e-3, weight_decay=1e-4, warmup=100, total=2000, final_frac=0.05):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def f(step):
        if step < warmup:
            return step / max(warmup, 1)
        t = min((step - warmup) / max(total - warmup, 1), 1.0)
        return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, f)


def train_step(model, opt, sched, images, coords, targets, clip=1.0):
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(images, coords), targets)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model, images_u8, batch=100):
    """Mean over images of -10 log10 MSE on the full grid."""
    import numpy as np

    ps = []
    for i in range(0, len(images_u8), batch):
        x = torch.from_numpy(images_u8[i : i + batch].astype("float32") / 255.0)
        S = x.shape[1]
        coords = pixel_grid(S).expand(len(x), -1, -1)
        rec = model(x, coords).reshape(x.shape)
        mse = ((rec - x) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
        ps.append((-10 * torch.log10(mse)).numpy())
    return float(np.concatenate(ps).mean())


if __name__ == "__main__":
    m = make("fast")
    print("fast params", sum(p.numel() for p in m.parameters()))
    print("balanced params", sum(p.numel() for p in make("balanced").parameters()))
