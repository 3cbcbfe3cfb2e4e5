"""Distribution metrics between two sets of feature vectors (pure numpy).

Fréchet distance and KID take the raw features, as published (FID, FD-DINOv2), so their values can be compared
with the literature in the same feature space; the k-NN metrics L2-normalize the rows first (cosine balls).

- Fréchet distance (Heusel et al. 2017): between Gaussians fitted to each set. The trace of the matrix square root
  is taken from the eigenvalues of sqrt(S1) S2 sqrt(S1), which is symmetric, so it is stable and never complex.
- KID (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic polynomial kernel (x·y/d + 1)³, averaged
  over random subsets; unlike FD it has no bias that depends on the number of images, and it can be negative.
- Precision and recall (Kynkäänniemi et al. 2019, k=3): the share of synthetic images inside the union of the real
  images' k-NN balls, and the reverse.
- Density and coverage (Naeem et al. 2020, k=5): how many real balls hold each synthetic image on average (divided
  by k), and the share of real balls that hold at least one synthetic image.

On unit vectors Euclidean distance is a decreasing function of cosine similarity, so "inside the ball of radius
r_k" is "at least as similar as the k-th neighbour", and the k-NN search works on similarities.
"""

from __future__ import annotations

import numpy as np

from ..errors import SkinsynthError
from .features import l2_normalize
from .neighbors import check_features, count_within, knn

PRECISION_K = 3
DENSITY_K = 5


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||² + tr(S_x + S_y - 2 (S_x S_y)^½)."""
    check_features(x, y)
    if len(x) < 2 or len(y) < 2:
        raise SkinsynthError(f"the Fréchet distance needs at least 2 vectors per set, got {len(x)} and {len(y)}")
    x, y = x.astype(np.float64), y.astype(np.float64)
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s_x)
    root_x = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_x @ s_y @ root_x), 0, None)).sum()
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * cross)


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel: within-set sums leave out the diagonal."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD² over `subsets` random subsets of min(subset_size, |x|, |y|) rows each."""
    check_features(x, y)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise SkinsynthError(f"KID needs at least 2 vectors per set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    x, y = x.astype(np.float64), y.astype(np.float64)
    values = [mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def manifold_metrics(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Precision/recall (k=3) and density/coverage (k=5) of `fake` against `real`, in cosine balls."""
    check_features(fake, real)
    real, fake = l2_normalize(real), l2_normalize(fake)
    if len(real) <= DENSITY_K or len(fake) <= PRECISION_K:
        raise SkinsynthError(f"precision/recall/density/coverage need more than {DENSITY_K} real and {PRECISION_K} synthetic vectors, got {len(real)} and {len(fake)}")
    real_knn, _ = knn(real, real, DENSITY_K, exclude_self=True)
    fake_knn, _ = knn(fake, fake, PRECISION_K, exclude_self=True)
    radius_p, radius_d = real_knn[:, PRECISION_K - 1], real_knn[:, DENSITY_K - 1]
    nearest_fake, _ = knn(real, fake, 1)
    return {
        "precision": float((count_within(fake, real, radius_p) > 0).mean()),
        "recall": float((count_within(real, fake, fake_knn[:, PRECISION_K - 1]) > 0).mean()),
        "density": float(count_within(fake, real, radius_d).sum() / (DENSITY_K * len(fake))),
        "coverage": float((nearest_fake[:, 0] >= radius_d).mean()),
    }


def all_metrics(real: np.ndarray, fake: np.ndarray, *, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float | None]:
    """Every metric of `fake` against `real` (raw features); a metric the set sizes are too small for is None."""
    results: dict[str, float | None] = {"fd": None, "kid": None, "kid_std": None, "precision": None, "recall": None, "density": None, "coverage": None}
    if min(len(real), len(fake)) >= 2:
        results["fd"] = frechet_distance(fake, real)
        results["kid"], results["kid_std"] = kernel_inception_distance(fake, real, kid_subsets, kid_subset_size, seed)
    if len(real) > DENSITY_K and len(fake) > PRECISION_K:
        results.update(manifold_metrics(real, fake))
    return results
