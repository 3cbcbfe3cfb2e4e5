"""The audits' statistics against scipy and published worked examples, and the conformal threshold's guarantee."""

import numpy as np
import pytest
from scipy import stats

from skinsynth.audit.stats import (
    conformal_threshold,
    difference_interval,
    excess_p_value,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 100), (81, 263), (50, 50)])
def test_wilson_interval_equals_scipy(k, n):
    expected = stats.binomtest(k, n).proportion_ci(method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_newcombe_difference_interval_matches_his_worked_examples():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10
    assert difference_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert difference_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=1e-4)


def test_excess_p_value_is_one_sided():
    assert excess_p_value(30, 100, 1, 100) < 1e-6
    assert excess_p_value(1, 100, 30, 100) > 0.99
    assert excess_p_value(1, 100, 1, 100) == pytest.approx(stats.fisher_exact([[1, 99], [1, 99]], alternative="greater")[1])


def test_conformal_threshold_keeps_the_false_positive_rate():
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        calibration, new = rng.normal(size=499), rng.normal(size=2000)
        threshold, exact = conformal_threshold(calibration, 0.01)
        assert exact
        rates.append((new > threshold).mean())
    assert np.mean(rates) <= 0.01 + 0.001  # the guarantee holds on average over calibration sets
    assert np.mean(rates) > 0.007  # and is not wildly conservative
    threshold, exact = conformal_threshold(np.arange(50.0), 0.01)
    assert threshold == 49.0 and not exact
