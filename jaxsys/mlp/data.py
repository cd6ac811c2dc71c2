"""Real data that installs offline with scikit-learn.

- classify: the 8x8 digits set (1,797 images of 64 pixels, 10 classes; UCI optical recognition of
  handwritten digits, shipped inside scikit-learn).
- regress: the diabetes set (442 patients, 10 standardised features, target = disease progression
  one year later; Efron et al. 2004, shipped inside scikit-learn). The target is standardised with the
  training mean/std so the MSE is in units of target variance (predicting the mean gives ~0.5).

Both use a fixed, seeded 80/20 train/test split; features are standardised with training statistics.
"""

from typing import NamedTuple

import numpy as np

from jaxsys.errors import ConfigError

SPLIT_SEED = 20261123
TEST_FRACTION = 0.2


class Dataset(NamedTuple):
    name: str
    x_train: np.ndarray  # [N_train x D] float32
    y_train: np.ndarray  # [N_train] int32 labels, or [N_train x 1] float32 targets
    x_test: np.ndarray
    y_test: np.ndarray
    num_outputs: int  # classes (classify) or target dims (regress)
    y_mean: float = 0.0  # regression: the standardisation of the target (for reporting in units)
    y_std: float = 1.0


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return perm[n_test:], perm[:n_test]


def _standardise(x_tr: np.ndarray, x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x_tr.mean(axis=0)
    sd = x_tr.std(axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)  # constant pixels (digit borders) stay 0
    return ((x_tr - mu) / sd).astype(np.float32), ((x_te - mu) / sd).astype(np.float32)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as _load

    d = _load()
    x, y = d.data.astype(np.float64), d.target.astype(np.int32)
    tr, te = _split(len(x))
    x_tr, x_te = _standardise(x[tr], x[te])
    return Dataset("digits", x_tr, y[tr], x_te, y[te], 10)


def load_diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes as _load

    d = _load()
    x, y = d.data.astype(np.float64), d.target.astype(np.float64)
    tr, te = _split(len(x))
    x_tr, x_te = _standardise(x[tr], x[te])
    mu, sd = float(y[tr].mean()), float(y[tr].std())
    y_tr = ((y[tr] - mu) / sd).astype(np.float32)[:, None]
    y_te = ((y[te] - mu) / sd).astype(np.float32)[:, None]
    return Dataset("diabetes", x_tr, y_tr, x_te, y_te, 1, mu, sd)


def load(task: str) -> Dataset:
    if task == "classify":
        return load_digits()
    if task == "regress":
        return load_diabetes()
    raise ConfigError(f"unknown task {task!r}; choose 'classify' (digits) or 'regress' (diabetes)")
