"""`jaxsys ginr ...`: train, profile, render and evaluate Mamba-GINR on CIFAR-10."""

import json
from pathlib import Path

from jaxsys.errors import ConfigError, DataError
from jaxsys.train.cli_args import add_train_args, positive_int


def _model_config(args):
    from jaxsys.ginr import model as gm

    over = {}
    for name in (
        "num_freqs",
        "scan_mode",
        "scan_chunk",
        "lp_placement",
        "patch_size",
        "dim",
        "num_lp",
        "depth",
        "hidden",
        "matmul_dtype",
    ):
        v = getattr(args, name, None)
        if v is not None:
            over[name] = v
    return gm.get_config(args.config, **over)


def _train(args) -> int:
    import jax

    from jaxsys.ginr import data as gdata
    from jaxsys.ginr import train as gt
    from jaxsys.train.cli_args import run_dir_from_args
    from jaxsys.train.distributed import mesh_from_args
    from jaxsys.train.sharding import batch_mesh

    mc = _model_config(args)
    tc = gt.TrainConfig(
        batch_size=args.batch,
        num_sample_coords=args.coords,
        coord_jitter=args.coord_jitter,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup,
        accum_steps=args.accum,
        bf16=args.bf16,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_images=args.eval_images,
        final_eval_images=args.final_eval_images,
        checkpoint_every=args.checkpoint_every,
        max_seconds=args.max_seconds,
    )
    mesh = mesh_from_args(args)  # joins a multi-process run first
    mesh = batch_mesh(args.batch) if mesh is None else mesh
    if jax.process_count() > 1 and not args.run_dir:
        raise ConfigError("a multi-process run needs --run-dir (the same folder for every process)")
    if args.data == "png20":
        x, _ = gdata.load_png20()
        train_x, test_x = x, x
    else:
        if not Path(args.data).exists():
            raise DataError(f"--data: dataset path not found: {args.data}")
        cache = None if args.no_cache else Path(args.cache_dir)
        train_x, _ = gdata.load_cifar10(args.data, "train", limit=args.limit, cache_dir=cache)
        test_x, _ = gdata.load_cifar10(args.data, "test", limit=args.test_limit, cache_dir=cache)
    run_dir = run_dir_from_args(args, "ginr")  # after the data loaded: a bad --data leaves no folder behind
    print(f"ginr: {len(train_x)} train / {len(test_x)} test images, run dir {run_dir}")
    summary = gt.train(mc, tc, train_x, test_x, run_dir, mesh=mesh, fsdp=args.fsdp, progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    return 0


def _profile(args) -> int:
    from jaxsys.ginr import profile as gp
    from jaxsys.train.io import atomic_write_json

    mc = _model_config(args)
    r = gp.profile(mc, args.batch, args.coords, args.repeats, args.trace)
    print(gp.format_profile(r))
    if args.json:
        atomic_write_json(args.json, r)
    return 0


def _images(args, split: str, limit: int | None, size: int):
    """uint8 images from --images files, or the first `limit` of --data (png20 or a dataset path)."""
    from jaxsys.ginr import data as gdata

    if getattr(args, "images", None):
        return gdata.load_image_files(args.images, size)
    if args.data == "png20":
        return gdata.load_png20()[0][:limit]
    if not Path(args.data).exists():
        raise DataError(f"--data: dataset path not found: {args.data}")
    return gdata.load_cifar10(args.data, split, limit=limit)[0]


def _render(args) -> int:
    import io

    import numpy as np
    from PIL import Image

    from jaxsys.ginr import model as gm
    from jaxsys.ginr import plots
    from jaxsys.ginr import train as gt
    from jaxsys.train.io import atomic_write_bytes

    gm.check_scale(args.scale, max_scale=16)
    params, mc, step = gt.load_run(args.run_dir)
    x_u8 = _images(args, args.split, args.count, mc.image_size)
    x = x_u8.astype(np.float32) / 255.0
    rec, sr = plots.render_1x_sx(params, x, mc, args.scale)  # checks the image shape
    out = Path(args.out) if args.out else Path(args.run_dir) / f"render_{args.scale}x.png"
    plots.save_reconstructions(params, x_u8, mc, out, n=len(x_u8), scale=args.scale, rendered=(rec, sr))
    each = out.with_suffix("")  # the renderings themselves, one PNG per image
    for i, img in enumerate(sr):
        buf = io.BytesIO()
        Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
        atomic_write_bytes(each / f"{i:03d}.png", buf.getvalue())
    psnr = [float(-10 * np.log10(max(np.mean((r - t) ** 2), 1e-12))) for r, t in zip(rec, x)]
    print(
        json.dumps(
            {
                "run_dir": str(args.run_dir),
                "step": step,
                "images": len(x),
                "scale": args.scale,
                "size": sr.shape[1],
                "psnr_1x": [round(p, 2) for p in psnr],
                "psnr_1x_mean": round(float(np.mean(psnr)), 2),
                "grid": str(out),
                "renderings": str(each),
            },
            indent=1,
        )
    )
    return 0


def _eval(args) -> int:
    from jaxsys.ginr import train as gt

    params, mc, step = gt.load_run(args.run_dir)
    r = gt.evaluate(params, _images(args, args.split, args.limit, mc.image_size), mc)
    print(json.dumps({"run_dir": str(args.run_dir), "step": step, "split": args.split, **r}))
    return 0


def _common(p) -> None:
    p.add_argument(
        "--config",
        default="cpu",
        help="cpu (default: best test PSNR per CPU-minute) | fast | balanced | high (BUILD_NOTES, GINR quality)",
    )
    p.add_argument("--num-freqs", dest="num_freqs", type=int, default=None, help="Fourier frequencies")
    p.add_argument("--scan-mode", dest="scan_mode", default=None, help="sequential | associative")
    p.add_argument(
        "--scan-chunk", dest="scan_chunk", type=int, default=None, help="scan chunk length (default 16; 0 = none)"
    )
    p.add_argument("--lp-placement", dest="lp_placement", default=None, help="equidistant | middle | n_group")
    p.add_argument("--patch-size", dest="patch_size", type=int, default=None)
    p.add_argument("--dim", type=int, default=None, help="override the config's encoder width")
    p.add_argument("--num-lp", dest="num_lp", type=int, default=None, help="override the LP token count")
    p.add_argument("--depth", type=int, default=None, help="override the number of BiMamba blocks")
    p.add_argument("--hidden", type=int, default=None, help="override the hyponet width")
    p.add_argument(
        "--matmul-dtype",
        dest="matmul_dtype",
        default=None,
        help="float32 (default) | bfloat16: weight matmuls on bf16 operands with float32 "
        "accumulation and master weights; the scan and other ops stay float32 (faster on "
        "CPUs with AVX512-BF16/AMX)",
    )
    p.add_argument("--batch", type=positive_int("--batch"), default=16, help="images per step")
    p.add_argument(
        "--coords",
        type=positive_int("--coords", allow_zero=True),
        default=512,
        help="random pixels per image (0 = full grid)",
    )


def register(sub) -> None:
    p = sub.add_parser("ginr", help="Mamba-GINR implicit representation of CIFAR-10 images")
    gsub = p.add_subparsers(dest="ginr_cmd")
    t = gsub.add_parser("train", help="train on CIFAR-10 (python batches, class folders or .tar.gz)")
    _common(t)
    t.add_argument(
        "--data", required=True, help="dataset folder/archive (e.g. ../shared/data/cifar10-jpeg) or 'png20' (packaged)"
    )
    add_train_args(t, steps=2000, checkpoint_every=500)
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    t.add_argument(
        "--coord-jitter",
        dest="coord_jitter",
        type=float,
        default=0.5,
        help="pixels in [0, 0.5]: each training coordinate moves uniformly within its pixel (default 0.5 = the "
        "whole pixel), so 2x/4x renderings show no lattice; 0 = pixel centres only",
    )
    t.add_argument("--warmup", type=positive_int("--warmup", allow_zero=True), default=20)
    t.add_argument("--accum", type=positive_int("--accum"), default=1, help="gradient accumulation micro-batches")
    t.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 compute, float32 master weights (meant for GPUs: on CPUs it is slower than float32)",
    )
    t.add_argument("--eval-every", dest="eval_every", type=positive_int("--eval-every", allow_zero=True), default=200)
    t.add_argument("--eval-images", dest="eval_images", type=positive_int("--eval-images"), default=256)
    t.add_argument(
        "--final-eval-images",
        dest="final_eval_images",
        type=positive_int("--final-eval-images", allow_zero=True),
        default=0,
        help="0 = all",
    )
    t.add_argument("--max-seconds", dest="max_seconds", type=float, default=0.0, help="training-time budget")
    t.add_argument("--limit", type=positive_int("--limit"), default=None, help="use only the first N training images")
    t.add_argument("--test-limit", dest="test_limit", type=positive_int("--test-limit"), default=None)
    t.add_argument(
        "--cache-dir",
        dest="cache_dir",
        default="runs/cache",
        help="decoded datasets are kept here (default runs/cache)",
    )
    t.add_argument("--no-cache", dest="no_cache", action="store_true", help="do not cache decoded images")
    t.set_defaults(func=_train)
    pr = gsub.add_parser("profile", help="time split encoder / modulation / hyponet, compile times")
    _common(pr)
    pr.add_argument("--repeats", type=positive_int("--repeats"), default=5)
    pr.add_argument("--trace", default=None, help="write a jax.profiler trace to this folder")
    pr.add_argument("--json", default=None, help="also write the numbers as JSON")
    pr.set_defaults(func=_profile)
    r = gsub.add_parser(
        "render", help="reconstruct images with a trained model, and render them at --scale times the resolution (PNGs)"
    )
    r.add_argument("--run-dir", dest="run_dir", required=True, help="a `jaxsys ginr train` run directory")
    r.add_argument(
        "--images",
        nargs="+",
        default=None,
        help="image files (32x32 RGB as trained); default: --count images of --data",
    )
    r.add_argument("--data", default="png20", help="dataset as for train, or 'png20' (packaged; default)")
    r.add_argument("--split", default="test", choices=["train", "test"])
    r.add_argument("--count", type=positive_int("--count"), default=8, help="images taken from --data")
    r.add_argument(
        "--scale", type=positive_int("--scale"), default=4, help="super-resolution factor of the rendering (1-16)"
    )
    r.add_argument(
        "--out",
        default=None,
        help="grid PNG (default RUN/render_<scale>x.png); the renderings go to the folder of the same name",
    )
    r.set_defaults(func=_render)
    e = gsub.add_parser("eval", help="PSNR of a trained model on the full pixel grid of a data split")
    e.add_argument("--run-dir", dest="run_dir", required=True, help="a `jaxsys ginr train` run directory")
    e.add_argument("--data", required=True, help="dataset as for train, or 'png20' (packaged)")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--limit", type=positive_int("--limit"), default=None, help="only the first N images of the split")
    e.set_defaults(func=_eval)
