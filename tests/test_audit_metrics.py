"""Distribution metrics against closed forms and known cases, and the blocked nearest-neighbour search against brute force."""

import numpy as np
import pytest
import scipy.linalg

from skinsynth.audit.metrics import (
    all_metrics,
    frechet_distance,
    kernel_inception_distance,
    manifold_metrics,
    mmd2_unbiased,
)
from skinsynth.audit.neighbors import count_within, knn
from skinsynth.errors import SkinsynthError


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_frechet_matches_the_closed_form_on_gaussians():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + np.eye(d), b @ b.T + 0.5 * np.eye(d)
    x = rng.multivariate_normal(mu1, s1, size=40_000)
    y = rng.multivariate_normal(mu2, s2, size=40_000)
    closed = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.03)
    # and exactly the textbook formula on the sample moments
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    sample = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(x, y) == pytest.approx(sample, rel=1e-6)


def fixed_features(n, d, seed, scale=3.0):
    """Raw (unnormalized) features with correlated dimensions, a mean offset and a spread of scales, like a network's."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * scale + rng.normal(size=d) * 5


def test_frechet_equals_scipy_sqrtm_on_raw_features():
    x, y = fixed_features(300, 32, 0), fixed_features(200, 32, 1, scale=2.0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    reference = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real)
    assert reference > 100  # raw scale: far from the [0, 4] range of unit vectors
    assert frechet_distance(x, y) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(reference, rel=1e-6)


def test_kid_equals_a_direct_computation_on_raw_features():
    x, y = fixed_features(60, 16, 2), fixed_features(50, 16, 3)
    d = x.shape[1]
    def k(a, b):
        return (float(a @ b) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(60) for j in range(60) if i != j) / (60 * 59)
    yy = sum(k(y[i], y[j]) for i in range(50) for j in range(50) if i != j) / (50 * 49)
    xy = sum(k(x[i], y[j]) for i in range(60) for j in range(50)) / (60 * 50)
    reference = xx + yy - 2 * xy
    # one subset of all rows of the smaller set: the estimate is exactly the unbiased MMD² of those rows
    mean, std = kernel_inception_distance(x[:50], y, subsets=1, subset_size=50)
    x50 = x[:50]
    xx50 = sum(k(x50[i], x50[j]) for i in range(50) for j in range(50) if i != j) / (50 * 49)
    xy50 = sum(k(x50[i], y[j]) for i in range(50) for j in range(50)) / (50 * 50)
    assert mean == pytest.approx(xx50 + yy - 2 * xy50, rel=1e-6) and std == 0.0
    assert mmd2_unbiased(x, y) == pytest.approx(reference, rel=1e-6)


def test_all_metrics_use_raw_features_for_fd_and_kid_and_unit_ones_for_the_balls():
    x, y = fixed_features(80, 8, 4), fixed_features(80, 8, 5)
    results = all_metrics(x, y, kid_subsets=3, kid_subset_size=80)
    assert results["fd"] == pytest.approx(frechet_distance(y, x), rel=1e-12)
    assert results["kid"] == pytest.approx(kernel_inception_distance(y, x, 3, 80)[0], rel=1e-12)
    assert manifold_metrics(x, y) == manifold_metrics(unit(x), 7 * unit(y))  # scale-free: cosine balls


def test_kid_is_unbiased_on_a_known_case():
    # 1-D, kernel (xy + 1)^3: X uniform on {0, 1}, Y uniform on {0, 2}: MMD² = 11/4 + 128/4 - 2 * 30/4 = 19.75.
    n = 2000
    x = np.repeat([0.0, 1.0], n // 2)[:, None]
    y = np.repeat([0.0, 2.0], n // 2)[:, None]
    mean, _ = kernel_inception_distance(x, y, subsets=20_000, subset_size=4, seed=1)
    assert mean == pytest.approx(19.75, abs=1.0)  # the biased (V-statistic) estimate at subsets of 4 would be ~27.9
    same, _ = kernel_inception_distance(x, x.copy(), subsets=20_000, subset_size=4, seed=2)
    assert same == pytest.approx(0.0, abs=0.5)


def test_identical_sets_score_perfectly_and_far_sets_do_not():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(300, 16)) + 10 * np.eye(16)[0])
    same = all_metrics(x, x.copy(), kid_subsets=10, kid_subset_size=100)
    assert same["fd"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(6 / 5)  # each ball holds its centre and its 5 neighbours (Naeem et al.)
    far = unit(rng.normal(size=(300, 16)) + 10 * np.eye(16)[1])
    apart = all_metrics(x, far, kid_subsets=10, kid_subset_size=100)
    assert apart["fd"] > 1.5 and apart["kid"] > 0.01
    assert apart["precision"] == apart["recall"] == apart["coverage"] == apart["density"] == 0.0


def test_small_sets_give_none_not_a_crash():
    x = unit(np.random.default_rng(0).normal(size=(4, 8)))
    result = all_metrics(x, x, kid_subsets=2)
    assert result["fd"] is not None and result["precision"] is None


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_blocked_knn_equals_brute_force(k, exclude_self, backend):
    rng = np.random.default_rng(k)
    refs = unit(rng.normal(size=(53, 8)))
    queries = refs if exclude_self else unit(rng.normal(size=(29, 8)))
    sims, idx = knn(queries, refs, k, exclude_self=exclude_self, block_queries=7, block_references=5, backend=backend)
    full = queries @ refs.T
    if exclude_self:
        np.fill_diagonal(full, -np.inf)
    expected = np.argsort(-full, axis=1)[:, :k]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(full, expected, axis=1), rtol=1e-5)


def test_count_within_equals_brute_force():
    rng = np.random.default_rng(3)
    q, r = unit(rng.normal(size=(31, 6))), unit(rng.normal(size=(17, 6)))
    thresholds = rng.uniform(0.0, 0.8, size=17).astype(np.float32)
    expected = (q @ r.T >= thresholds[None]).sum(axis=1)
    np.testing.assert_array_equal(count_within(q, r, thresholds, block_queries=4, block_references=6), expected)


def test_bad_feature_sets_are_refused():
    a, b = np.zeros((3, 4), np.float32), np.zeros((3, 5), np.float32)
    with pytest.raises(SkinsynthError, match="different widths"):
        knn(a, b)
    with pytest.raises(SkinsynthError, match="empty"):
        knn(a, np.zeros((0, 4), np.float32))
    with pytest.raises(SkinsynthError, match="different widths"):
        frechet_distance(a, b)
    with pytest.raises(SkinsynthError, match="more than"):
        manifold_metrics(a, a)
