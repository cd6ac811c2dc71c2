"""Re-evaluate parameter pickles of experiments/ginr_recipes.py on the class-balanced test subset
(`ginr_recipes.eval_subset`: every 10th test image, 100 per class) on the full 32x32 grid.

    PYTHONPATH=$PWD python experiments/ginr_reeval.py runs/p/*.pkl --out runs/reeval.jsonl
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from ginr_grid import load  # noqa: E402
from ginr_recipes import load_data  # noqa: E402

from jaxsys.ginr import train as gt  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("pickles", nargs="+")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "runs" / "reeval.jsonl"))
    a = ap.parse_args(argv)
    _, test_x = load_data(a.images)
    for pk in a.pickles:
        params, mc = load(pk)
        if mc.image_size != 32:
            continue
        r = gt.evaluate(params, test_x, mc)
        rec = {"name": Path(pk).stem, "test_psnr_balanced": round(r["psnr"], 3), "images": r["images"]}
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
