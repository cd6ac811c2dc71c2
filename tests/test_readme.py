"""The README's Python examples run as written and compute what their comments say."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _check_gpt(ns):  # a loss near log(vocab) at init and a finite gradient for every parameter
    assert abs(float(ns["loss"]) - np.log(ns["cfg"].vocab_size)) < 0.5
    assert set(ns["grads"]) == set(ns["params"])
    assert all(np.isfinite(np.asarray(g)).all() for g in ns["grads"].values())


def _check_mlp(ns):  # the hand-derived gradients equal autodiff's
    for a, b in zip(ns["grads"], ns["auto"]):
        for k in a:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-4, atol=1e-6)


def _check_codec(ns):  # lossless and smaller than the int8 bytes
    assert (ns["back"] == ns["q"]).all() and len(ns["blob"]) < ns["q"].nbytes


def _check_ginr(ns):
    assert ns["rgb"].shape == (2, 100, 3) and ns["big"].shape == (2, 128, 128, 3)
    assert float(ns["rgb"].min()) >= 0 and float(ns["rgb"].max()) <= 1


CHECKS = {"seq": _check_gpt, "auto": _check_mlp, "blob": _check_codec, "big": _check_ginr}


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    seen = []
    for code in blocks:
        ns: dict = {}
        exec(compile(code, str(README), "exec"), ns)
        marks = [k for k in CHECKS if k in ns]
        assert len(marks) == 1, f"README example without a check here: {code[:80]!r}"
        CHECKS[marks[0]](ns)
        seen.append(marks[0])
    assert sorted(seen) == sorted(CHECKS)  # every system's example is there and was checked
