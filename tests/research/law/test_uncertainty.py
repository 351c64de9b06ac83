"""Bootstrap intervals and the leave-one-length-out error (memft.research.law.uncertainty)."""

import numpy as np

from memft.research.law import HeldOut, bootstrap, leave_one_length_out
from tests.research.law.test_fit import TRUE, points


def test_bootstrap_intervals_contain_the_true_values():
    ci = bootstrap(*points(noise=0.02, seed=0), n_boot=100, seed=0)
    widths = {"C": 0.5, "alpha": 0.1, "beta": 0.1, "b": 0.1}
    for p, v in TRUE.items():
        lo, hi = ci[p]
        assert lo <= v <= hi, (p, ci[p])
        assert 0 < hi - lo < widths[p], (p, ci[p])


def test_leave_one_length_out():
    clean = leave_one_length_out(*points())
    assert clean.folds == 5 and clean.reason is None
    assert clean.mape < 1e-8 and clean.rmse < 1e-8
    noisy = leave_one_length_out(*points(noise=0.02, seed=0))
    assert 0.005 < noisy.mape < 0.05
    r, l, y = points()
    two = np.isin(l, [64, 128])
    few = leave_one_length_out(r[two], l[two], y[two])
    assert few == HeldOut(None, None, 0, "2 distinct lengths; leave-one-length-out needs 3")
