"""Distribution quality audit: how close is the synthetic distribution to the real one, overall and per class?

A number like "FD 31.4" means little alone, so every metric is shown beside the same metric between two halves of
the real data: what a perfect generator (one that samples the real distribution) would score with as many images.
The real split is cut per class and by group (lesion / patient: two photos of one lesion in both halves would make
the baseline look better than any generator can), seeded; the synthetic images and the first half are each compared
with the second half, after subsampling both to the same size, because recall, coverage and the Fréchet distance
all move with the number of images. The `contrastive` encoder trains on a third part of the real rows, disjoint from
both halves, so the baseline is not computed on images the feature space was fitted to. The report lists the rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..card import add_report, report_folder
from ..data import label_names, open_dataset
from ..errors import DatasetError, SkinsynthError
from ..paths import portable_reference
from ..shards import atomic_write_json
from ..splits import assign_splits
from . import reports
from .features import ContrastiveConfig, default_features, load_extractor
from .metrics import all_metrics

REPORT = "quality.json"
PLOT = "quality_per_class.png"
PLOTTED = ("fd", "kid", "precision", "recall", "density", "coverage")
DEFINITIONS = {
    "fd": "Fréchet distance between Gaussians fitted to the raw features of each set (FID / FD-DINOv2 in those spaces); "
    "lower is closer; a perfect generator scores the real-vs-real value (0 only with infinitely many images)",
    "kid": "kernel inception distance: unbiased MMD² with the cubic polynomial kernel on raw features, mean over subsets; "
    "a perfect generator scores about 0 (the real-vs-real value)",
    "kid_std": "standard deviation of KID over the subsets",
    "precision": "share of synthetic images inside the real images' k=3 nearest-neighbour balls (realism); "
    "a perfect generator scores the real-vs-real value",
    "recall": "share of real images inside the synthetic images' k=3 balls (diversity); a perfect generator scores the real-vs-real value",
    "density": "mean number of real k=5 balls holding each synthetic image, divided by 5; a perfect generator scores about 1",
    "coverage": "share of real k=5 balls holding at least one synthetic image; a perfect generator scores the real-vs-real value",
}


def real_parts(labels: np.ndarray, groups: np.ndarray, seed: int, encoder_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """Row indices of the real parts: `half_a`, `half_b` (and `encoder` when `encoder_fraction` > 0), stratified by
    class and grouped, so no lesion / patient is in two parts (`splits.assign_splits`, seeded)."""
    rest = (1 - encoder_fraction) / 2
    fractions = {"half_a": rest, "half_b": rest} | ({"encoder": encoder_fraction} if encoder_fraction else {})
    assigned = np.asarray(assign_splits([str(k) for k in labels], [str(g) for g in groups], fractions, seed))
    return {part: np.flatnonzero(assigned == part) for part in fractions}


def compare(synthetic: np.ndarray, real_a: np.ndarray, real_b: np.ndarray, seed: int, **kid) -> tuple[dict, dict, int]:
    """(synthetic vs real_b, real_a vs real_b, n): both candidate sets subsampled to the same n rows."""
    rng = np.random.default_rng(seed)
    n = min(len(synthetic), len(real_a))
    def pick(x):
        return x[np.sort(rng.choice(len(x), n, replace=False))]
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
    encoder_fraction: float = 1 / 3,
    update_card: bool = False,
    device: str | None = None,
    contrastive: ContrastiveConfig = ContrastiveConfig(),
    progress: bool = True,
) -> dict:
    """Compare all splits of `synthetic` with the `real_split` of `real`; mirrors `skinsynth audit quality`.
    With `contrastive` features, `encoder_fraction` of the real rows (whole groups) train the encoder and are
    left out of the comparison. Writes quality.json and a per-class bar chart into `out`; returns the report."""
    if not 0 < encoder_fraction < 1:
        raise SkinsynthError(f"`encoder_fraction` must be between 0 and 1, got {encoder_fraction}")
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

    real_labels = np.asarray(real_part["label"], dtype=int)
    groups = np.asarray(real_part["group_id"] if "group_id" in real_part.column_names else np.arange(len(real_part)))
    features = default_features() if features == "auto" else features
    trains_encoder = features == "contrastive"
    parts = real_parts(real_labels, groups, seed, encoder_fraction if trains_encoder else 0.0)
    encoder_rows = parts.get("encoder")
    extractor = load_extractor(features, train_split=real_part.select(encoder_rows.tolist()) if trains_encoder else None, cache_dir=out,
                               device=device, contrastive=contrastive, progress=progress)
    compared = np.sort(np.concatenate([parts["half_a"], parts["half_b"]]))
    extracted = extractor.extract(real_part.select(compared.tolist()), desc=f"features: real {real_split}", progress=progress)
    real_features = np.zeros((len(real_part), extracted.shape[1]), np.float32)
    real_features[compared] = extracted
    syn_parts = {split: part for split, part in syn.items() if len(part)}
    syn_features = np.concatenate([extractor.extract(part, desc=f"features: synthetic {split}", progress=progress) for split, part in syn_parts.items()])
    # synthetic labels in the real dataset's numbering, so the same class is compared with itself
    syn_labels = np.concatenate([[real_names.index(syn_names[k]) for k in part["label"]] for part in syn_parts.values()]).astype(int)
    half_a, half_b = parts["half_a"], parts["half_b"]
    kid = {"kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size}

    overall, baseline, n = compare(syn_features, real_features[half_a], real_features[half_b], seed, **kid)
    per_class, per_class_real, per_class_n = {}, {}, {}
    for name in syn_names:
        k = real_names.index(name)
        per_class[name], per_class_real[name], per_class_n[name] = compare(
            syn_features[syn_labels == k], real_features[half_a][real_labels[half_a] == k], real_features[half_b][real_labels[half_b] == k], seed, **kid)
    report = {
        "features": extractor.name,
        "synthetic": portable_reference(synthetic, out),  # local datasets relative to the report's folder
        "real": portable_reference(real, out),
        "real_split": real_split,
        "num_synthetic": len(syn_features),
        "num_real": len(compared),
        "num_compared": n,
        "overall": overall,
        "real_vs_real": baseline,
        "per_class": per_class,
        "per_class_real_vs_real": per_class_real,
        "per_class_num_compared": per_class_n,
        "settings": {"seed": seed, **kid, "precision_recall_k": 3, "density_coverage_k": 5, "feature_normalization": "raw for fd and kid, L2 for the k-NN metrics"},
        "rows": {
            "reference": f"half_b: the real images every set is compared with ({len(half_b)} rows of real `{real_split}`)",
            "baseline": f"half_a: the real images compared with half_b as a perfect generator would be ({len(half_a)} rows)",
            "encoder": (f"{len(encoder_rows)} rows that trained the contrastive encoder, in no half" if trains_encoder else "pretrained, no real rows"),
            "split_by": "class and group_id (lesion / patient), seeded" if "group_id" in real_part.column_names else "class, seeded (no group_id column)",
            "half_a_rows": half_a.tolist(),
            "half_b_rows": half_b.tolist(),
            "encoder_rows": encoder_rows.tolist() if trains_encoder else [],
        },
        "definitions": DEFINITIONS,
    }
    atomic_write_json(out / REPORT, report)
    plot_per_class(report, out / PLOT)
    if update_card:
        add_report(synthetic, "quality", report, written_in=out, path_fields=("synthetic", "real"))
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
        values = [[np.nan if d.get(metric) is None else d[metric] for d in row] for row in (synthetic, real)]
        ax.bar(x - 0.2, values[0], 0.4, label="synthetic vs real")
        ax.bar(x + 0.2, values[1], 0.4, label="real vs real", hatch="//", alpha=0.6)
        ax.set_title(metric + (" (lower is better)" if metric in ("fd", "kid") else ""), fontsize=9)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Distribution quality per class ({report['features']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
