"""Distribution quality audit: how close is the synthetic distribution to the real one, overall and per class?

A number like "FD 0.31" means little alone, so every metric is shown beside the same metric between two halves of
the real data: what a perfect generator (one that samples the real distribution) would score with as many images.
The real split is cut in two halves per class (seeded); the synthetic images and the first half are each compared
with the second half, after subsampling both to the same size, because recall, coverage and the Fréchet distance
all move with the number of images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import label_names, open_dataset
from ..errors import DatasetError
from ..shards import atomic_write_json
from . import reports
from ..card import add_report, report_folder
from .features import ContrastiveConfig, load_extractor
from .metrics import all_metrics

REPORT = "quality.json"
PLOT = "quality_per_class.png"
PLOTTED = ("fd", "kid", "precision", "recall", "density", "coverage")


def real_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves of the real set, each holding half of every class (shuffled with `seed`)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for k in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == k))
        first.append(rows[: len(rows) // 2])
        second.append(rows[len(rows) // 2 :])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def compare(synthetic: np.ndarray, real_a: np.ndarray, real_b: np.ndarray, seed: int, **kid) -> tuple[dict, dict, int]:
    """(synthetic vs real_b, real_a vs real_b, n): both candidate sets subsampled to the same n rows."""
    rng = np.random.default_rng(seed)
    n = min(len(synthetic), len(real_a))
    pick = lambda x: x[np.sort(rng.choice(len(x), n, replace=False))]  # noqa: E731
    return all_metrics(real_b, pick(synthetic), seed=seed, **kid), all_metrics(real_b, pick(real_a), seed=seed, **kid), n


def audit_quality(
    synthetic: str | Path,
    real: str | Path,
    out: str | Path,
    *,
    features: str = "auto",
    real_split: str = "train",
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    update_card: bool = False,
    device: str | None = None,
    contrastive: ContrastiveConfig = ContrastiveConfig(),
    progress: bool = True,
) -> dict:
    """Compare all splits of `synthetic` with the `real_split` of `real`; mirrors `skinsynth audit quality`.
    Writes quality.json and a per-class bar chart into `out`; returns the report."""
    if update_card:
        report_folder(synthetic)
    real_ds = open_dataset(real, required_splits=(real_split,))
    syn = open_dataset(synthetic)
    out = reports.prepare_output(out)  # once the datasets open: a refused audit leaves no folder behind
    real_part = real_ds[real_split]
    if len(real_part) < 2:
        raise DatasetError(f"the real `{real_split}` split of `{real}` has {len(real_part)} images; the quality audit needs real images to compare with")
    syn_names, real_names = label_names(syn), label_names(real_ds)
    if not any(len(part) for part in syn.values()):
        raise DatasetError(f"the synthetic dataset `{synthetic}` has no images")
    missing = [name for name in syn_names if name not in real_names]
    if missing:
        raise DatasetError(f"synthetic classes {missing} are not classes of the real dataset `{real}` ({real_names}); compare datasets with the same class names")

    extractor = load_extractor(features, train_split=real_part, cache_dir=out, device=device, contrastive=contrastive, progress=progress)
    real_features = extractor.extract(real_part, desc=f"features: real {real_split}", progress=progress)
    real_labels = np.asarray(real_part["label"], dtype=int)
    parts = {split: part for split, part in syn.items() if len(part)}
    syn_features = np.concatenate([extractor.extract(part, desc=f"features: synthetic {split}", progress=progress) for split, part in parts.items()])
    # synthetic labels in the real dataset's numbering, so the same class is compared with itself
    syn_labels = np.concatenate([[real_names.index(syn_names[k]) for k in part["label"]] for part in parts.values()]).astype(int)
    half_a, half_b = real_halves(real_labels, seed)
    kid = {"kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size}

    overall, baseline, n = compare(syn_features, real_features[half_a], real_features[half_b], seed, **kid)
    per_class, per_class_real, per_class_n = {}, {}, {}
    for name in syn_names:
        k = real_names.index(name)
        per_class[name], per_class_real[name], per_class_n[name] = compare(
            syn_features[syn_labels == k], real_features[half_a][real_labels[half_a] == k], real_features[half_b][real_labels[half_b] == k], seed, **kid)
    report = {
        "features": extractor.name,
        "synthetic": str(synthetic),
        "real": str(real),
        "real_split": real_split,
        "num_synthetic": len(syn_features),
        "num_real": len(real_features),
        "num_compared": n,
        "overall": overall,
        "real_vs_real": baseline,
        "per_class": per_class,
        "per_class_real_vs_real": per_class_real,
        "per_class_num_compared": per_class_n,
        "settings": {"seed": seed, **kid, "precision_recall_k": 3, "density_coverage_k": 5},
    }
    atomic_write_json(out / REPORT, report)
    plot_per_class(report, out / PLOT)
    if update_card:
        add_report(synthetic, "quality", report)
    return report


def plot_per_class(report: dict, path: Path) -> None:
    """One panel per metric: the synthetic score of every class beside the real-vs-real score (hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["overall", *report["per_class"]]
    synthetic = [report["overall"], *report["per_class"].values()]
    real = [report["real_vs_real"], *report["per_class_real_vs_real"].values()]
    fig, axes = plt.subplots(2, 3, figsize=(max(9, 1.2 * len(names) * 1.5), 6.5), squeeze=False)
    x = np.arange(len(names))
    for ax, metric in zip(axes.flat, PLOTTED):
        value = lambda d, metric=metric: np.nan if d.get(metric) is None else d[metric]  # noqa: E731
        ax.bar(x - 0.2, [value(d) for d in synthetic], 0.4, label="synthetic vs real")
        ax.bar(x + 0.2, [value(d) for d in real], 0.4, label="real vs real", hatch="//", alpha=0.6)
        ax.set_title(metric + (" (lower is better)" if metric in ("fd", "kid") else ""), fontsize=9)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Distribution quality per class ({report['features']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
