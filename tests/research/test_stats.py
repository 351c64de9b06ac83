"""The page's statistics (memft.research.stats): paired intervals, power and seeds needed, Spearman, by hand."""

import math

import pytest

from memft.research.stats import (
    bootstrap_interval, paired_interval, paired_power, pairs_to_tell, seeds_for_effect, spearman,
)


def test_paired_t_interval_by_hand():
    # PhoneBook OT − SFT exact match on seeds 0-2 (benchmarks/paper): mean −5.56, sd 8.39 points; t_{2, .975} = 4.3027
    i = paired_interval([-0.1, -0.0667, 0.0])
    assert round(i.mean, 4) == -0.0556 and round(i.sd, 4) == 0.0509
    half = 4.302652729911275 * i.sd / math.sqrt(3)
    assert (i.lo, i.hi) == pytest.approx((i.mean - half, i.mean + half)) and not i.excludes_zero
    assert paired_interval([0.3]).lo is None and paired_interval([0.2, 0.2, 0.2]).excludes_zero  # sd 0: a point
    j = paired_interval([0.2, 0.05, 0.05], level=0.975)  # t_{2, .9875} = 6.2053
    assert round(j.hi - j.mean, 4) == round(6.205346816 * 0.0866025 / math.sqrt(3), 4)


def test_bootstrap_interval_is_inside_the_range_of_the_differences():
    i = bootstrap_interval([0.1 * k for k in range(20)])
    assert 0 <= i.lo < 0.95 < i.hi <= 1.9 and i.method == "bootstrap"


def test_power_and_seeds_needed_by_textbook_values():
    assert round(paired_power(0.1, 10, 0.1), 3) == 0.803  # d = 1, n = 10: 80.3 %
    assert seeds_for_effect(0.1, 0.1) == 10 and seeds_for_effect(0.05, 0.1) == 5  # d = 2: 5 pairs (power 0.83)
    assert paired_power(0.05, 4, 0.1) < 0.8 <= paired_power(0.05, 5, 0.1)
    assert paired_power(0.006, 3, 0.07) > 0.999  # scipy's noncentral t gives nan here; the integral does not
    assert paired_power(0.1, 1, 0.1) == 0.0


def test_spearman_with_ties_and_its_interval():
    s = spearman([1, 2, 3], [2, 1, 3])  # ranks (1, 2, 3) vs (2, 1, 3): 1 − 6·2/(3·8) = 0.5
    assert (round(s.rho, 9), s.n, s.lo) == (0.5, 3, None)
    t = spearman([0, 0, 1, 2], [0, 1, 1, 2])  # average ranks (1.5, 1.5, 3, 4) vs (1, 2.5, 2.5, 4): Σdxdy 3.75 / 4.5
    assert round(t.rho, 9) == round(3.75 / 4.5, 9)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]).rho)
    s = spearman(range(10), [0, 2, 1, 3, 4, 6, 5, 7, 9, 8])  # ρ = 1 − 36/990; Fisher z ± 1.96·√((1 + ρ²/2)/7)
    z, se = math.atanh(s.rho), math.sqrt((1 + s.rho**2 / 2) / 7)
    assert s.rho == pytest.approx(1 - 36 / 990) and s.lo == pytest.approx(math.tanh(z - 1.959964 * se), rel=1e-5)
    assert pairs_to_tell(0.72, 0.908) == 30 and pairs_to_tell(0.5, 0.5) is None
