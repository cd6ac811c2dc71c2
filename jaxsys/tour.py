"""`jaxsys tour`: the main job. Runs a short stage of every system on embedded defaults and ends with
a summary table; results (summary.json, per-stage JSON and PNG plots) go under a run directory.

Each system provides `jaxsys/<system>/tour.py` with

    def run_stage(run_dir: pathlib.Path, quick: bool) -> dict[str, object]

which writes its files under `run_dir` and returns the headline numbers for the summary table.
"""

import argparse
import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path

from jaxsys.train.io import atomic_write_json, make_run_dir

STAGES = ["mlp", "autodecoder", "gpt", "codec", "ginr"]


def available_stages() -> list[str]:
    return [s for s in STAGES if importlib.util.find_spec(f"jaxsys.{s}.tour") is not None]


def run_tour(out: Path, quick: bool = False, only: list[str] | None = None, log=print) -> dict:
    run_dir = make_run_dir(out, "tour")
    stages = only or available_stages()
    summary: dict = {"run_dir": str(run_dir), "quick": quick, "stages": {}}
    for name in stages:
        log(f"== stage {name} ==")
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"jaxsys.{name}.tour")
            result = mod.run_stage(run_dir / name, quick=quick)
            status = "ok"
        except Exception as e:  # a failing stage is reported, and the tour exits non-zero
            traceback.print_exc()
            result, status = {"error": f"{type(e).__name__}: {e}"}, "failed"
        summary["stages"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1), **result}
        atomic_write_json(run_dir / "summary.json", summary)
    log(format_summary(summary))
    log(f"results in {run_dir}")
    return summary


def format_summary(summary: dict) -> str:
    rows = [("stage", "status", "time", "result")]
    for name, r in summary["stages"].items():
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in r.items() if k not in ("status", "seconds"))
        rows.append((name, r["status"], f"{r['seconds']}s", extra))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * (sum(w) + 6 + 30))
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _cmd(args) -> int:
    only = args.only.split(",") if args.only else None
    if only:
        unknown = [s for s in only if s not in STAGES]
        if unknown:
            from jaxsys.errors import ConfigError

            raise ConfigError(f"unknown tour stage(s) {unknown}; stages are {STAGES}")
    summary = run_tour(Path(args.out), quick=args.quick, only=only)
    return 0 if all(r["status"] == "ok" for r in summary["stages"].values()) else 1


def register(sub) -> None:
    p = sub.add_parser("tour", help="run a short stage of every system and summarise")
    p.add_argument("--out", default="runs", help="root folder for the run directory")
    p.add_argument("--quick", action="store_true", help="tiny configs (seconds per stage)")
    p.add_argument("--only", default="", help="comma-separated stages, e.g. mlp,gpt")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":
    sys.exit(_cmd(argparse.Namespace(out="runs", quick=False, only="")))
