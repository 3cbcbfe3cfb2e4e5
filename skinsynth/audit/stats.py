"""Small-sample statistics for the audits' proportions: a share with its interval, a difference of two shares with
its interval and a one-sided test, and the threshold that keeps a false-positive rate below a nominal level.

Pure functions of counts, so every number in a report can be recomputed from the counts it prints beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054  # two-sided 95 %


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (good coverage even at k = 0 or near n, unlike the Wald interval)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10, 1998) of p1 - p2, built from the two Wilson intervals."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def excess_p_value(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact test of "share 1 is larger than share 2" (exact at any count, including zero)."""
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1])


def conformal_threshold(null_scores: np.ndarray, rate: float) -> tuple[float, bool]:
    """(threshold, exact): the ⌈(1 - rate)(n + 1)⌉-th smallest of n scores of images known not to be copies.

    A new image exchangeable with them scores strictly above it with probability at most `rate` (split-conformal
    guarantee). With too few scores for `rate` (n + 1 < 1/rate) the largest score is returned and `exact` is False.
    """
    scores = np.sort(np.asarray(null_scores, dtype=np.float64))
    if len(scores) == 0:
        raise ValueError("no null scores to calibrate a threshold on")
    rank = math.ceil((1 - rate) * (len(scores) + 1))
    return float(scores[min(rank, len(scores)) - 1]), rank <= len(scores)
