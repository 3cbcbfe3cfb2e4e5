"""Memorization audit: does any synthetic image copy a patient photo the generator was trained on?

Every synthetic image's nearest real training image by cosine similarity in a feature space; an image is flagged
when that similarity is above a threshold. The default threshold is the self-calibrated one of Dar et al. 2024
("Unconditional latent diffusion models memorize patient imaging data"): the 95th percentile of each real training
image's similarity to its nearest real *validation* image. Two different photos of different patients are that
similar only 5% of the time, so a synthetic image closer than that to a training image is suspiciously close. A
fixed threshold (SSCD's copy-detection cut-off, 0.5) is the alternative.

`calibration="validation-to-train"` takes the baseline the other way round: each validation image's similarity to
its nearest *training* image. That is exactly what a synthetic image that copies nobody would score (a query
against the same training set), so its false-positive rate on new patients is the nominal 5% whatever the split
sizes; Dar et al.'s direction searches the usually smaller validation split, which lowers the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import label_names, open_dataset
from ..errors import DatasetError, SkinsynthError
from ..shards import atomic_write_json
from .features import ContrastiveConfig, load_extractor, torch_device
from .neighbors import knn
from . import reports
from ..card import add_report, report_folder

REPORT = "memorization.json"
HISTOGRAM = "memorization_histogram.png"
PAIRS = "memorization_closest_pairs.png"


CALIBRATIONS = ("train-to-validation", "validation-to-train")


def _check_calibration(calibration: str) -> None:
    if calibration not in CALIBRATIONS:
        raise SkinsynthError(f"`--calibration` must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")


def calibrated_threshold(train_features: np.ndarray, validation_features: np.ndarray, percentile: float = 95.0,
                         calibration: str = "train-to-validation") -> tuple[float, np.ndarray]:
    """(threshold, baseline): the `percentile` of every training image's similarity to its nearest validation image
    (Dar et al.), or of every validation image's similarity to its nearest training image."""
    if len(validation_features) == 0:
        raise DatasetError("the self-calibrated threshold needs real validation images, and the validation split is empty; give --threshold")
    _check_calibration(calibration)
    queries, references = (train_features, validation_features) if calibration == "train-to-validation" else (validation_features, train_features)
    baseline, _ = knn(queries, references, 1)
    return float(np.percentile(baseline[:, 0], percentile)), baseline[:, 0]


def flag_copies(similarities: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose nearest training image is more similar than the threshold."""
    return np.flatnonzero(similarities > threshold)


def audit_memorization(
    synthetic: str | Path,
    train: str | Path,
    out: str | Path,
    *,
    features: str = "auto",
    threshold: float | None = None,
    percentile: float = 95.0,
    calibration: str = "train-to-validation",
    train_split: str = "train",
    validation_split: str = "validation",
    backend: str = "auto",
    num_pairs: int = 8,
    update_card: bool = False,
    device: str | None = None,
    contrastive: ContrastiveConfig = ContrastiveConfig(),
    progress: bool = True,
) -> dict:
    """Audit every split of `synthetic` against the `train_split` of the real dataset `train`; mirrors
    `skinsynth audit memorization`. Writes memorization.json and two PNGs into `out`; returns the report."""
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise SkinsynthError(f"`--threshold` is a cosine similarity between -1 and 1, got {threshold}")
    _check_calibration(calibration)
    if not 0 < percentile < 100:
        raise SkinsynthError(f"`--percentile` must be between 0 and 100, got {percentile}")
    if update_card:
        report_folder(synthetic)
    needed = (train_split,) if threshold is not None else (train_split, validation_split)
    real = open_dataset(train, required_splits=needed)
    syn = open_dataset(synthetic)
    if len(real[train_split]) == 0:
        raise DatasetError(f"the real `{train_split}` split of `{train}` is empty: there is nothing to compare with")
    out = reports.prepare_output(out)  # once the inputs are known good: a refused audit leaves no folder behind

    if backend == "auto":  # the search runs where the features are computed
        backend = "numpy" if torch_device(device) == "cpu" else "torch"
    extractor = load_extractor(features, train_split=real[train_split], cache_dir=out, device=device, contrastive=contrastive, progress=progress)
    train_features = extractor.extract(real[train_split], desc=f"features: real {train_split}", progress=progress)
    baseline = None
    if threshold is None or len(real.get(validation_split, ())):
        validation_features = extractor.extract(real[validation_split], desc=f"features: real {validation_split}", progress=progress)
        calibrated, baseline = calibrated_threshold(train_features, validation_features, percentile, calibration)
    if threshold is None:
        threshold, method = calibrated, f"p{percentile:g} of real {calibration} nearest-neighbour similarity" + (" (Dar et al. 2024)" if calibration == CALIBRATIONS[0] else "")
    else:
        method = "fixed"

    names = label_names(syn)
    nearest: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, part in syn.items():
        if len(part) == 0:
            nearest[split] = (np.zeros(0, np.float32), np.zeros(0, np.int64))
            continue
        query = extractor.extract(part, desc=f"features: synthetic {split}", progress=progress)
        sims, idx = knn(query, train_features, 1, backend=backend, device=device)
        nearest[split] = (sims[:, 0], idx[:, 0])

    flagged, per_split, class_total, class_flagged = [], {}, np.zeros(len(names), int), np.zeros(len(names), int)
    for split, (sims, idx) in nearest.items():
        labels = np.asarray(syn[split]["label"], dtype=int)
        rows = flag_copies(sims, threshold)
        np.add.at(class_total, labels, 1)
        np.add.at(class_flagged, labels[rows], 1)
        per_split[split] = {"num_synthetic": len(sims), "num_flagged": len(rows), "rate": len(rows) / len(sims) if len(sims) else 0.0}
        flagged += [{"split": split, "row": int(r), "label": names[labels[r]], "nearest_train_row": int(idx[r]), "similarity": round(float(sims[r]), 6)} for r in rows]
    flagged.sort(key=lambda f: -f["similarity"])
    all_sims = np.concatenate([s for s, _ in nearest.values()]) if nearest else np.zeros(0)
    num_synthetic = int(class_total.sum())
    report = {
        "features": extractor.name,
        "threshold": round(float(threshold), 6),
        "threshold_method": method,
        "num_synthetic": num_synthetic,
        "num_train": len(train_features),
        "num_flagged": len(flagged),
        "rate": len(flagged) / num_synthetic if num_synthetic else 0.0,
        "per_class": {name: (int(f) / int(t) if t else None) for name, f, t in zip(names, class_flagged, class_total)},
        "per_split": per_split,
        "similarity": _summary(all_sims),
        "baseline": _summary(baseline) if baseline is not None else None,
        "synthetic": str(synthetic),
        "real": str(train),
        "flagged": flagged,
    }
    atomic_write_json(out / REPORT, report)
    plot_histogram(all_sims, baseline, threshold, out / HISTOGRAM, extractor.name)
    plot_closest_pairs(syn, real[train_split], nearest, out / PAIRS, num_pairs)
    if update_card:
        add_report(synthetic, "memorization", report)
    return report


def _summary(values: np.ndarray) -> dict:
    if values is None or len(values) == 0:
        return {}
    return {name: round(float(np.percentile(values, q)), 6) for name, q in (("min", 0), ("median", 50), ("p95", 95), ("max", 100))}


def plot_histogram(similarities: np.ndarray, baseline: np.ndarray | None, threshold: float, path: Path, features: str) -> None:
    """Synthetic-to-train nearest-neighbour similarities against the real train-to-validation baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(min(similarities.min(initial=1), baseline.min(initial=1) if baseline is not None else 1, threshold) - 0.01, 1.0, 60)
    ax.hist(similarities, bins=bins, density=True, alpha=0.6, label=f"synthetic → nearest real train ({len(similarities)})")
    if baseline is not None:
        ax.hist(baseline, bins=bins, density=True, alpha=0.6, label=f"real train → nearest real validation ({len(baseline)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"copy threshold {threshold:.3f}")
    ax.set_xlabel(f"cosine similarity ({features})")
    ax.set_ylabel("density")
    ax.set_title("Nearest-neighbour similarity to the training images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_closest_pairs(syn, train_split, nearest: dict, path: Path, num_pairs: int) -> None:
    """The most similar (synthetic, training image) pairs side by side, most similar first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = [(float(sims[r]), split, int(r), int(idx[r])) for split, (sims, idx) in nearest.items() for r in np.argsort(-sims, kind="stable")[:num_pairs]]
    pairs = sorted(candidates, key=lambda c: -c[0])[:num_pairs]
    if not pairs:
        return
    fig, axes = plt.subplots(len(pairs), 2, figsize=(4.4, 2.2 * len(pairs)), squeeze=False)
    for (sim, split, row, train_row), (left, right) in zip(pairs, axes):
        left.imshow(syn[split][row]["image"].convert("RGB"))
        left.set_title(f"synthetic {split}[{row}]", fontsize=8)
        right.imshow(train_split[train_row]["image"].convert("RGB"))
        right.set_title(f"train[{train_row}]  sim {sim:.3f}", fontsize=8)
        for ax in (left, right):
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
