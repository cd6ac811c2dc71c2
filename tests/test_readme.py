"""The README's Python example runs as written (docs that stay true)."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        ns: dict = {}
        exec(compile(code, str(README), "exec"), ns)
    # the GPT example: a finite loss near log(vocab) at init and a gradient for every parameter
    loss, grads, params = ns["loss"], ns["grads"], ns["params"]
    assert abs(float(loss) - np.log(ns["cfg"].vocab_size)) < 0.5
    assert set(grads) == set(params) and all(np.isfinite(np.asarray(g)).all() for g in grads.values())
