import numpy as np
import pytest

from jaxsys.errors import ConfigError
from jaxsys.mlp import data


def test_digits_split_is_fixed_and_standardised():
    d1, d2 = data.load_digits(), data.load_digits()
    assert d1.x_train.shape == (1438, 64) and d1.x_test.shape == (359, 64)
    assert d1.x_train.dtype == np.float32 and d1.y_train.dtype == np.int32
    np.testing.assert_array_equal(d1.x_test, d2.x_test)
    np.testing.assert_array_equal(d1.y_test, d2.y_test)
    assert set(np.unique(d1.y_test)) == set(range(10)) and d1.num_outputs == 10
    m, s = d1.x_train.mean(0), d1.x_train.std(0)
    varying = s > 0
    np.testing.assert_allclose(m, 0, atol=1e-5)
    np.testing.assert_allclose(s[varying], 1, rtol=1e-4)
    # no image appears in both splits
    tr = {r.tobytes() for r in d1.x_train}
    assert sum(r.tobytes() in tr for r in d1.x_test) <= 3  # sklearn digits has a few exact duplicates


def test_diabetes_regression_target():
    d = data.load_diabetes()
    assert d.x_train.shape == (354, 10) and d.y_train.shape == (354, 1) and d.num_outputs == 1
    np.testing.assert_allclose(d.y_train.mean(), 0, atol=1e-5)
    assert 100 < d.y_mean < 200 and 50 < d.y_std < 100  # disease progression units


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown task 'rank'"):
        data.load("rank")
