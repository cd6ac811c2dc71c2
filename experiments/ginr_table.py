"""Ranked table of the recipe study: runs/recipes.jsonl (experiments/ginr_recipes.py) joined with
runs/reeval.jsonl (experiments/ginr_reeval.py: runs evaluated before the switch to the class-balanced
test subset), written to experiments/results/ginr_recipes.{md,json}.

    PYTHONPATH=$PWD python experiments/ginr_table.py
    PYTHONPATH=$PWD python experiments/ginr_table.py --runs runs/study2/recipes.jsonl --out ginr_shapes

With --runs, the runs of that file (every config) are ranked as they are (all evaluated on the balanced
subset) into experiments/results/<--out>.{md,json}.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="", help="a recipes.jsonl to rank as it is")
    ap.add_argument("--out", default="ginr_recipes", help="experiments/results/<out>.{md,json}")
    a = ap.parse_args(argv)
    if a.runs:
        recs = [json.loads(x) for x in Path(a.runs).read_text().splitlines() if x.strip()]
        return write([{**r, "test_psnr_balanced": r["test_psnr"]} for r in recs], a.out)
    recs = [json.loads(x) for x in (ROOT / "runs" / "recipes.jsonl").read_text().splitlines() if x.strip()]
    re_path = ROOT / "runs" / "reeval.jsonl"
    balanced = {}
    if re_path.is_file():
        for x in re_path.read_text().splitlines():
            r = json.loads(x)
            balanced[r["name"]] = r["test_psnr_balanced"]
    airplane_runs = {"base", "lr3e-3_w20", "lr3e-3_w20_bs16", "lr3e-3_w20_h128"}  # evaluated on test[:1000]
    rows = []
    for r in recs:
        if r["config"] != "fast" or "image_size=16" in r["set"]:
            continue
        airplanes = r["name"] in airplane_runs and r["seed"] == 0
        b = balanced.get(r["name"]) if airplanes else r["test_psnr"]
        rows.append({**r, "test_psnr_balanced": b, "test_psnr_airplanes": r["test_psnr"] if airplanes else None})
    return write(rows, a.out)


def write(rows: list[dict], out: str) -> None:
    rows.sort(key=lambda r: -(r["test_psnr_balanced"] or 0))
    lines = [
        "| rank | recipe (overrides on `config`) | seed | steps | CPU-min | wall-min | CPU/wall | compile CPU-s | "
        "test PSNR, 1,000 balanced | train PSNR (last 50) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | {r['name']}: `{r['config']}` `{' '.join(r['set']) or 'defaults'}` | {r['seed']} | {r['steps']} | {r['cpu_min']:.2f} | "
            f"{r['wall_min']:.2f} | {r['cpu_per_wall']:.2f} | {r['compile_cpu_s']} | {r['test_psnr_balanced']:.2f} | "
            f"{r['train_psnr_last50']:.2f} |"
        )
    res = ROOT / "experiments" / "results"
    (res / f"{out}.md").write_text("\n".join(lines) + "\n")
    (res / f"{out}.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
