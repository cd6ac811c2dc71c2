"""Mamba-GINR: patch tokens + learnable LP tokens -> bidirectional Mamba encoder -> LP outputs that
condition an implicit network mapping any pixel coordinate to RGB.

    tokens  = patches W_embed (+ Fourier(patch centre) W_pos)            [B, P, dim]
    seq     = insert(tokens, lp, positions)                              [B, P + M, dim]
    seq     = LN_f(h + residual) after `depth` BiMamba blocks
    lp_out  = seq[:, positions]                                          [B, M, dim]
    f       = Fourier(coord)                                             [B, N, F]
    q       = relu(f W_q1) W_q2;  k = lp_out W_k;  v = lp_out W_v
    mod     = softmax_m(einsum('bnd,bmd->bnm', q, k) / sqrt(h)) v  W_o   [B, N, h]
    rgb     = sigmoid(MLP([f, mod]))                                     [B, N, 3] in [0, 1]

Every step after the encoder acts on each query n on its own (no op mixes the N axis), so decoding
concat(c1, c2) equals decoding c1 and c2 separately; tests/ginr/test_model.py checks it.

Coordinates are (y, x) in [-1, 1]; pixel (i, j) of an S x S image has centre ((i + .5) / S * 2 - 1,
(j + .5) / S * 2 - 1). Images are float [B, S, S, C] in [0, 1].
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.errors import ConfigError, DataError, ShapeError
from jaxsys.ginr.mamba import (
    block_apply,
    block_apply_glr,
    block_init,
    dense,
    layernorm,
    layernorm_init,
    torch_linear_init,
)
from jaxsys.ginr.scan import SCAN_MODES, batch_groups
from jaxsys.nn.fourier import fourier_dim, fourier_features
from jaxsys.nn.linear import MATMUL_DTYPES, normalize_matmul_dtype
from jaxsys.train.compile import init_jit

PLACEMENTS = ("equidistant", "middle", "n_group")


@dataclasses.dataclass(frozen=True)
class GinrConfig:
    image_size: int = 32  # S: images are S x S
    patch_size: int = 4  # p: non-overlapping p x p patches -> (S/p)^2 tokens
    channels: int = 3  # C: colour channels
    dim: int = 128  # encoder token width
    num_lp: int = 16  # M: learnable LP tokens
    depth: int = 3  # BiMamba residual blocks
    hidden: int = 64  # modulation / hyponet width
    ff_mult: int = 4  # encoder MLP width = ff_mult * dim
    hypo_blocks: int = 2  # residual (Linear-ReLU-Linear) blocks in the hyponet
    num_freqs: int = 4  # Fourier frequencies 2^k * 2 pi, k < num_freqs (coords and patch pos)
    pos_embed: bool = True  # add a Fourier position embedding to patch tokens
    lp_placement: str = "equidistant"  # where LP tokens sit among the patches (see PLACEMENTS)
    lp_groups: int = 4  # number of LP groups for placement "n_group"
    d_state: int = 16  # SSM state size N
    d_conv: int = 4  # causal depthwise conv width
    expand: int = 2  # d_inner = expand * dim
    scan_mode: str = "sequential"  # "sequential" (lax.scan; fastest on CPU) or "associative"
    scan_chunk: int = 16  # > 0: sequential: recompute states per chunk in the backward (faster,
    # less memory); associative: associative within chunks, sequential across
    scan_checkpoint: bool = False  # recompute scan states in the backward pass
    fuse_directions: bool = False  # BiMamba: one vmapped scan for both directions (slower at balanced)
    matmul_dtype: str = "float32"  # "bfloat16": the weight matmuls take bf16 operands, accumulate in
    # float32 (the scan, norms and all other ops stay float32)

    @property
    def md(self) -> str | None:
        """matmul_dtype as the `md` argument of jaxsys.nn.linear.dense (None = float32)."""
        return normalize_matmul_dtype(self.matmul_dtype)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def coord_dim(self) -> int:
        return fourier_dim(2, self.num_freqs)

    def __post_init__(self):
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ConfigError(
                f"GinrConfig: image_size {self.image_size} must be a positive multiple of patch_size {self.patch_size}"
            )
        for name in (
            "dim",
            "num_lp",
            "depth",
            "hidden",
            "ff_mult",
            "d_state",
            "d_conv",
            "expand",
            "channels",
            "lp_groups",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"GinrConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.num_freqs < 0 or self.hypo_blocks < 0 or self.scan_chunk < 0:
            raise ConfigError("GinrConfig: num_freqs, hypo_blocks and scan_chunk must be >= 0")
        if self.lp_placement not in PLACEMENTS:
            raise ConfigError(f"GinrConfig.lp_placement must be one of {PLACEMENTS}, got {self.lp_placement!r}")
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise ConfigError(f"GinrConfig.matmul_dtype must be one of {MATMUL_DTYPES}, got {self.matmul_dtype!r}")
        if self.scan_mode not in SCAN_MODES:
            raise ConfigError(f"GinrConfig.scan_mode must be one of {SCAN_MODES}, got {self.scan_mode!r}")
        if self.lp_placement == "n_group" and self.lp_groups > self.num_lp:
            raise ConfigError(f"GinrConfig: lp_groups {self.lp_groups} > num_lp {self.num_lp}")


CONFIGS = {
    # the best test PSNR per CPU-minute of the recipe study (BUILD_NOTES, GINR quality): a narrow encoder
    # (more steps per CPU-second) and many LP tokens (more spatial detail for the modulation)
    "cpu": GinrConfig(dim=64, num_lp=64, depth=3, hidden=64),
    "fast": GinrConfig(dim=128, num_lp=16, depth=3, hidden=64),
    "balanced": GinrConfig(dim=256, num_lp=32, depth=4, hidden=128),
    "high": GinrConfig(dim=512, num_lp=64, depth=6, hidden=256),
}


def get_config(name: str, **overrides) -> GinrConfig:
    if name not in CONFIGS:
        raise ConfigError(f"unknown ginr config {name!r}; choose one of {sorted(CONFIGS)}")
    try:
        return dataclasses.replace(CONFIGS[name], **overrides)
    except TypeError as e:
        raise ConfigError(f"bad ginr config override: {e}") from None


# ---------------------------------------------------------------- LP placement
def lp_positions(num_patches: int, num_lp: int, placement: str = "equidistant", groups: int = 4) -> np.ndarray:
    """Indices (sorted, int) of the LP tokens in the combined sequence of length P + M.

    equidistant: linspace(0, P + M - 1, M) truncated (the reference's torch.linspace(...).long()).
    middle: one contiguous run of M tokens starting after the first P // 2 patches.
    n_group: M split into `groups` contiguous runs, the runs placed equidistantly among the patches.
    """
    P, M, T = num_patches, num_lp, num_patches + num_lp
    if placement == "equidistant":
        pos = np.linspace(0, T - 1, M).astype(np.int64)
    elif placement == "middle":
        pos = np.arange(P // 2, P // 2 + M)
    elif placement == "n_group":
        sizes = [len(a) for a in np.array_split(np.arange(M), groups)]
        unit_pos = np.linspace(0, P + groups - 1, groups).astype(np.int64)  # groups as single units
        order, g, p = [], 0, 0
        for u in range(P + groups):
            if g < groups and u == unit_pos[g]:
                order += ["lp"] * sizes[g]
                g += 1
            else:
                order.append("patch")
                p += 1
        pos = np.array([i for i, o in enumerate(order) if o == "lp"])
    else:
        raise ConfigError(f"lp placement must be one of {PLACEMENTS}, got {placement!r}")
    if len(np.unique(pos)) != M or pos.min() < 0 or pos.max() >= T:
        raise ConfigError(f"lp placement {placement!r} produced invalid positions for P={P}, M={M}")
    return pos


def _perm(cfg: GinrConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = lp_positions(cfg.num_patches, cfg.num_lp, cfg.lp_placement, cfg.lp_groups)
    T = cfg.num_patches + cfg.num_lp
    is_lp = np.zeros(T, bool)
    is_lp[pos] = True
    perm = np.empty(T, np.int64)
    perm[pos] = cfg.num_patches + np.arange(cfg.num_lp)
    perm[~is_lp] = np.arange(cfg.num_patches)
    return perm, pos, np.nonzero(~is_lp)[0]


def insert_lp(tokens_BxPxD: jax.Array, lp_MxD: jax.Array, cfg: GinrConfig) -> jax.Array:
    """Interleave LP tokens into the patch sequence: concat([tokens, lp])[:, perm]."""
    perm, _, _ = _perm(cfg)
    lp = jnp.broadcast_to(lp_MxD, (tokens_BxPxD.shape[0], *lp_MxD.shape)).astype(tokens_BxPxD.dtype)
    return jnp.concatenate([tokens_BxPxD, lp], axis=1)[:, perm]


def read_lp(seq_BxTxD: jax.Array, cfg: GinrConfig) -> jax.Array:
    """LP tokens back from the positions they were inserted at."""
    return seq_BxTxD[:, _perm(cfg)[1]]


def read_patches(seq_BxTxD: jax.Array, cfg: GinrConfig) -> jax.Array:
    return seq_BxTxD[:, _perm(cfg)[2]]


# ---------------------------------------------------------------- coordinates and patches
def pixel_grid(height: int, width: int | None = None, dtype=jnp.float32) -> jax.Array:
    """Pixel-centre coordinates (y, x) in [-1, 1], row-major: [H * W, 2]."""
    width = height if width is None else width
    ys = (jnp.arange(height, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (jnp.arange(width, dtype=dtype) + 0.5) / width * 2 - 1
    yy, xx = jnp.meshgrid(ys, xs, indexing="ij")
    return jnp.stack([yy, xx], -1).reshape(-1, 2)


def patchify(images_BxSxSxC: jax.Array, p: int) -> jax.Array:
    """[B, S, S, C] -> [B, (S/p)^2, p*p*C], patches row-major, pixels row-major inside a patch."""
    B, S, _, C = images_BxSxSxC.shape
    g = S // p
    x = images_BxSxSxC.reshape(B, g, p, g, p, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, g * g, p * p * C)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_images(images, cfg: GinrConfig, where: str = "images") -> None:
    """Images must be float [B, S, S, C] in [0, 1] (value check only on concrete arrays): uint8 or
    0-255 float images are refused rather than decoded as near-white."""
    S, C = cfg.image_size, cfg.channels
    if getattr(images, "ndim", None) != 4 or tuple(images.shape[1:]) != (S, S, C):
        raise ShapeError(
            f"{where}: expected [B, {S}, {S}, {C}] images for this config, got shape "
            f"{getattr(images, 'shape', type(images).__name__)}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise DataError(
            f"{where}: expected float images in [0, 1], got {images.dtype} (uint8 images: divide by 255 first)"
        )
    if _is_concrete(images) and images.size:
        x = np.asarray(images)
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise DataError(
                f"{where}: pixel values must lie in [0, 1], got range [{lo:.9g}, {hi:.9g}]"
                + (" (0-255 images: divide by 255 first)" if hi > 1.5 else "")
            )


def check_coords(coords, where: str = "coords") -> None:
    """Coordinates must be [B, N, 2] (y, x) inside [-1, 1] (value check only on concrete arrays)."""
    if getattr(coords, "ndim", None) != 3 or coords.shape[-1] != 2:
        raise ShapeError(
            f"{where}: expected [B, N, 2] (y, x) coordinates, got shape "
            f"{getattr(coords, 'shape', type(coords).__name__)}"
        )
    if coords.shape[1] == 0:
        raise ShapeError(f"{where}: expected at least one coordinate per image, got shape {tuple(coords.shape)}")
    if _is_concrete(coords):
        c = np.asarray(coords)
        if not np.all(np.isfinite(c)):
            raise DataError(f"{where}: coordinates contain non-finite values")
        lo, hi = float(c.min(initial=0.0)), float(c.max(initial=0.0))
        if lo < -1 - 1e-6 or hi > 1 + 1e-6:
            raise ShapeError(
                f"{where}: coordinates must lie in [-1, 1] (pixel centres via "
                f"pixel_grid), got range [{lo:.9g}, {hi:.9g}]"
            )


# ---------------------------------------------------------------- init
def _sinusoidal(n: int, d: int) -> np.ndarray:
    pos = np.arange(n)[:, None]
    div = np.exp(np.arange(0, d, 2) * -(math.log(10000.0) / d))
    pe = np.zeros((n, d), np.float32)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)[:, : d // 2]
    return pe


def init_params(key: jax.Array, cfg: GinrConfig) -> dict:
    """All parameters of the model as a nested dict of float32 arrays: one jitted computation compiled
    at XLA's lowest backend optimisation level (the same values as op by op, where each of the ~60
    random draws would compile on its own; about half the compile time of the default level)."""
    return _init_jit(key, cfg)


def _init(key: jax.Array, cfg: GinrConfig) -> dict:
    k = iter(jax.random.split(key, 16 + cfg.depth + cfg.hypo_blocks))
    D, H, F = cfg.dim, cfg.hidden, cfg.coord_dim
    mamba_kw = dict(d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand)
    enc = {
        "patch_embed": torch_linear_init(next(k), cfg.patch_size**2 * cfg.channels, D),
        "lp": jnp.asarray(_sinusoidal(cfg.num_lp, D)),
        "blocks": [block_init(next(k), D, cfg.ff_mult * D, **mamba_kw) for _ in range(cfg.depth)],
        "norm_f": layernorm_init(D),
    }
    if cfg.pos_embed:
        enc["pos_proj"] = torch_linear_init(next(k), F, D)
    mod = {
        "q1": torch_linear_init(next(k), F, H),
        "q2": torch_linear_init(next(k), H, H),
        "k": torch_linear_init(next(k), D, H),
        "v": torch_linear_init(next(k), D, H),
        "o": torch_linear_init(next(k), H, H),
    }
    hypo = {
        "inp": torch_linear_init(next(k), F + H, H),
        "blocks": [
            {"l1": torch_linear_init(next(k), H, H), "l2": torch_linear_init(next(k), H, H)}
            for _ in range(cfg.hypo_blocks)
        ],
        "out": torch_linear_init(next(k), H, 3),
    }
    return {"encoder": enc, "modulation": mod, "hyponet": hypo}


_init_jit = init_jit(_init, static_argnums=1)  # plain call inside an outer trace


def num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


# ---------------------------------------------------------------- forward
def encode(params: dict, images_BxSxSxC: jax.Array, cfg: GinrConfig) -> jax.Array:
    """Images in [0, 1] -> LP token outputs [B, M, dim]."""
    p = params["encoder"]
    md = cfg.md
    x = patchify(images_BxSxSxC * 2 - 1, cfg.patch_size)
    tok = dense(p["patch_embed"], x, md)
    if cfg.pos_embed:
        centres = pixel_grid(cfg.grid, dtype=tok.dtype)
        tok = tok + dense(p["pos_proj"], fourier_features(centres, cfg.num_freqs), md)
    seq = insert_lp(tok, p["lp"], cfg)
    keep = _perm(cfg)[1]
    if uses_fast_path(cfg):
        return _encode_glr(p, seq, cfg, keep)
    h, res = seq, None
    kw = dict(
        scan_mode=cfg.scan_mode,
        chunk=cfg.scan_chunk,
        checkpoint=cfg.scan_checkpoint,
        fuse_directions=cfg.fuse_directions,
        md=md,
    )
    for bp in p["blocks"][:-1]:
        h, res = block_apply(bp, h, res, **kw)
    # only the LP tokens are read: the last block's out_proj and MLP run on them alone (exactly equal to
    # running the block on every token and reading the LP positions afterwards)
    h, res = block_apply(p["blocks"][-1], h, res, keep=keep, **kw)
    return layernorm(p["norm_f"], h + res)


def uses_fast_path(cfg: GinrConfig) -> bool:
    """The default configuration (chunked sequential scan, no checkpoint, unfused directions) runs the
    encoder in the [G, L, R, dim] layout (mamba.block_apply_glr); other scan settings use the
    [B, L, dim] reference functions."""
    return cfg.scan_mode == "sequential" and cfg.scan_chunk > 0 and not cfg.scan_checkpoint and not cfg.fuse_directions


def _encode_glr(p: dict, seq_BxTxD: jax.Array, cfg: GinrConfig, keep: np.ndarray) -> jax.Array:
    """The encoder blocks on tokens laid out [G, T, R, dim] (b = g R + r; G = the scan's batch groups),
    so the scans read and write their inputs without transposes; one transpose in, one out."""
    B, T, D = seq_BxTxD.shape
    G = batch_groups(B, cfg.d_state, cfg.expand * cfg.dim)
    h = jnp.transpose(seq_BxTxD.reshape(G, B // G, T, D), (0, 2, 1, 3))
    res = None
    md = cfg.md
    for bp in p["blocks"][:-1]:
        h, res = block_apply_glr(bp, h, res, chunk=cfg.scan_chunk, md=md)
    h, res = block_apply_glr(p["blocks"][-1], h, res, keep=keep, chunk=cfg.scan_chunk, md=md)
    out = layernorm(p["norm_f"], h + res)  # [G, M, R, dim]
    return jnp.transpose(out, (0, 2, 1, 3)).reshape(B, len(keep), D)


def _coord_features(coords_BxNx2: jax.Array, cfg: GinrConfig, dtype) -> jax.Array:
    """Fourier features computed in float32 at least (high frequencies need the coordinate bits),
    then cast to the compute dtype."""
    c = coords_BxNx2.astype(jnp.promote_types(coords_BxNx2.dtype, jnp.float32))
    return fourier_features(c, cfg.num_freqs).astype(dtype)


def modulate(params: dict, lp_BxMxD: jax.Array, coords_BxNx2: jax.Array, cfg: GinrConfig) -> jax.Array:
    """Per-query cross-attention from coordinate features to the LP tokens -> modulation [B, N, h]."""
    p = params["modulation"]
    md = cfg.md
    f = _coord_features(coords_BxNx2, cfg, lp_BxMxD.dtype)
    q = dense(p["q2"], jax.nn.relu(dense(p["q1"], f, md)), md)
    k = dense(p["k"], lp_BxMxD, md)
    v = dense(p["v"], lp_BxMxD, md)
    s = jnp.einsum("bnd,bmd->bnm", q, k) / math.sqrt(cfg.hidden)
    a = jax.nn.softmax(s.astype(jnp.promote_types(s.dtype, jnp.float32)), axis=-1).astype(v.dtype)
    return dense(p["o"], jnp.einsum("bnm,bmd->bnd", a, v), md)


def hyponet(params: dict, coords_BxNx2: jax.Array, mod_BxNxH: jax.Array, cfg: GinrConfig) -> jax.Array:
    """MLP over [Fourier(coord), modulation] -> RGB in [0, 1]."""
    p = params["hyponet"]
    md = cfg.md
    f = _coord_features(coords_BxNx2, cfg, mod_BxNxH.dtype)
    h = jax.nn.relu(dense(p["inp"], jnp.concatenate([f, mod_BxNxH], -1), md))
    for bp in p["blocks"]:
        h = h + dense(bp["l2"], jax.nn.relu(dense(bp["l1"], h, md)), md)
    return jax.nn.sigmoid(dense(p["out"], h, md).astype(jnp.promote_types(h.dtype, jnp.float32)))


def decode(params: dict, lp_BxMxD: jax.Array, coords_BxNx2: jax.Array, cfg: GinrConfig) -> jax.Array:
    return hyponet(params, coords_BxNx2, modulate(params, lp_BxMxD, coords_BxNx2, cfg), cfg)


def apply(params: dict, images_BxSxSxC: jax.Array, coords_BxNx2: jax.Array, cfg: GinrConfig) -> jax.Array:
    """RGB [B, N, 3] at the query coordinates of each image."""
    check_images(images_BxSxSxC, cfg)
    check_coords(coords_BxNx2)
    if coords_BxNx2.shape[0] != images_BxSxSxC.shape[0]:
        raise ShapeError(f"apply: {images_BxSxSxC.shape[0]} images but coords for {coords_BxNx2.shape[0]}")
    return decode(params, encode(params, images_BxSxSxC, cfg), coords_BxNx2, cfg)


def check_scale(scale, max_scale: int | None = None) -> None:
    """A rendering scale is a whole number >= 1 (and <= max_scale when given)."""
    ok = isinstance(scale, (int, np.integer)) and not isinstance(scale, bool) and scale >= 1
    if not ok or (max_scale is not None and scale > max_scale):
        top = f" and <= {max_scale}" if max_scale is not None else ""
        raise ConfigError(f"scale must be an int >= 1{top}, got {scale!r}")


def render(params: dict, images_BxSxSxC: jax.Array, cfg: GinrConfig, scale: int = 1) -> jax.Array:
    """Reconstruct images on the full pixel grid at `scale` times the resolution: [B, sS, sS, 3]."""
    check_scale(scale)
    B = images_BxSxSxC.shape[0]
    R = cfg.image_size * scale
    coords = jnp.broadcast_to(pixel_grid(R), (B, R * R, 2))
    return apply(params, images_BxSxSxC, coords, cfg).reshape(B, R, R, 3)
