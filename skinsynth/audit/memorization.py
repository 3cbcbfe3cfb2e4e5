"""Memorization audit: does any synthetic image copy a patient photo the generator was trained on?

Every synthetic image's nearest real training image and a similarity score; an image is flagged when the score is
above a threshold. Two kinds of score: `keypoints` (the default; `keypoints.py`), the number of SIFT keypoints an
image shares with a training image under one similarity transform, which catches reproductions of a photo under any
crop, rotation, colour change or compression; or the cosine similarity in an embedding (`--features`, `features.py`),
which can also catch look-alikes re-rendered with other textures, when the embedding is good enough. The planted-copy
recall below says which is good enough on the data at hand. The audit validates itself on real images the generator
never saw (the real `test` split when there is one, else `validation`; lesions / patients the training split does
not hold):

1. **Threshold at a stated false-positive rate.** The held-out images are cut in two halves by group. Each image of
   the calibration half is scored against the training images exactly as a synthetic image is; the threshold is the
   split-conformal quantile of those scores, so an image of a new patient is flagged with probability at most
   `false_positive_rate` (default 1 %). The other half *measures* that rate, with a 95 % Wilson interval.
2. **Excess.** The headline: the share of synthetic images above the threshold minus the share of measurement-half
   real images above it, with Newcombe's 95 % interval and a one-sided Fisher exact p-value. A generator that copies
   no one has an excess of 0 (its images are new patients too); "n images are suspiciously close" is a claim only
   when the excess is significant.
3. **Planted-copy recall.** Training images altered by crop, flip, rotation, colour jitter and JPEG (`copies`) are
   scored like synthetic images: the share flagged *and* matched to their own lesion group is the audit's recall at
   this threshold, with its interval. Flags are per image, so a planted copy's flag is what it would be inside the
   synthetic set.
4. **Group-aware.** A copy of another photo of the same lesion is a copy too: every flagged image names the nearest
   training image's group (`group_id`: lesion or patient) and all training rows of that group.

A fixed `--threshold` (a score; SSCD's copy-detection cut-off is cosine 0.5) skips step 1's calibration but not its
measurement.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..card import add_report, report_folder
from ..data import label_names, open_dataset
from ..errors import DatasetError, SkinsynthError
from ..paths import portable_reference
from ..shards import atomic_write_json
from . import reports
from .features import ContrastiveConfig
from .keypoints import KeypointConfig
from .matching import build_matcher, calibrate, flag_copies, groups_of, nearest_training
from .stats import (
    difference_interval,
    excess_p_value,
)

logger = logging.getLogger(__name__)

REPORT = "memorization.json"
HISTOGRAM = "memorization_histogram.png"
PAIRS = "memorization_closest_pairs.png"
HELDOUT_SPLITS = ("test", "validation")
SIGNIFICANCE = 0.05

DEFINITIONS = {
    "score": "how alike an image and its nearest training image are (see `score`); higher is more alike",
    "threshold": "score above which a synthetic image is flagged as a possible copy of its nearest training image",
    "false_positive_rate": "share of held-out real images (new patients, not used to set the threshold) above the threshold; "
    "a perfect generator's images are flagged at this rate too, so it is the audit's false-alarm rate",
    "rate": "share of synthetic images above the threshold; a perfect generator scores the false-positive rate",
    "excess": "synthetic share above the threshold minus the held-out real share, with a 95 % interval and a one-sided test; "
    "a perfect generator scores 0 (not significant)",
    "heldout_flagged": "held-out real images above the threshold: false alarms, or the same lesion under another group id "
    "(a leak between the real splits; look at them)",
    "planted_copy_recall": "share of planted copies (training images altered by crop, flip, rotation, colour jitter and JPEG) "
    "flagged and matched to their own lesion group; a perfect audit scores 1, whatever the generator",
}


def excess(k_syn: int, n_syn: int, k_real: int, n_real: int) -> dict:
    """The synthetic share above the threshold minus the held-out real share, its interval and one-sided test."""
    if not n_syn or not n_real:
        return {"value": None, "ci95": None, "p_value": None, "significant": False, "num_excess_images": None}
    low, high = difference_interval(k_syn, n_syn, k_real, n_real)
    value = k_syn / n_syn - k_real / n_real
    p = excess_p_value(k_syn, n_syn, k_real, n_real)
    return {"value": value, "ci95": [round(low, 6), round(high, 6)], "p_value": p, "significant": p < SIGNIFICANCE,
            "num_excess_images": max(0.0, value * n_syn)}


def verdict(report: dict) -> str:
    """One sentence a reader can act on."""
    e, fpr = report["excess"], report["false_positive_rate"]
    if e["value"] is None:
        return "no synthetic images to audit"
    head = f"{report['num_flagged']} of {report['num_synthetic']} synthetic images are above the threshold"
    if e["significant"]:
        return (f"{head}: about {e['num_excess_images']:.0f} more than new patients would be (excess {e['value']:.1%}, "
                f"95% CI {e['ci95'][0]:.1%} to {e['ci95'][1]:.1%}, one-sided p = {e['p_value']:.2g}): inspect the flagged images")
    expected = "fewer than" if e["ci95"][1] < 0 else "as many as"  # fewer: held-out images above it are likely training lesions under other ids
    return (f"{head}, {expected} expected from new patients ({fpr['value']:.1%} of held-out real images are): no evidence "
            f"of copying (excess {e['value']:.1%}, 95% CI {e['ci95'][0]:.1%} to {e['ci95'][1]:.1%}, p = {e['p_value']:.2g})")


def audit_memorization(
    synthetic: str | Path,
    train: str | Path,
    out: str | Path,
    *,
    features: str = "keypoints",
    false_positive_rate: float = 0.01,
    threshold: float | None = None,
    train_split: str = "train",
    heldout_split: str | None = None,
    num_planted: int = 200,
    seed: int = 0,
    backend: str = "auto",
    num_pairs: int = 8,
    update_card: bool = False,
    device: str | None = None,
    contrastive: ContrastiveConfig = ContrastiveConfig(),
    keypoints: KeypointConfig = KeypointConfig(),
    progress: bool = True,
) -> dict:
    """Audit every split of `synthetic` against the `train_split` of the real dataset `train`; mirrors
    `skinsynth audit memorization`. Writes memorization.json and two PNGs into `out`; returns the report.

    `features`: "keypoints" (SIFT matches verified by RANSAC, `keypoints.py`) or any `features.load_extractor` spec
    ("auto", "contrastive", "dinov2-vitl14", a Hub id, "classifier:DIR"…), compared by cosine similarity."""
    if threshold is not None and features == "keypoints" and threshold < 0:
        raise SkinsynthError(f"`--threshold` with keypoints is a number of matched keypoints, 0 or more; got {threshold}")
    if threshold is not None and features != "keypoints" and not -1.0 <= threshold <= 1.0:
        raise SkinsynthError(f"`--threshold` with `{features}` features is a cosine similarity between -1 and 1, got {threshold}")
    if not 0 < false_positive_rate < 0.5:
        raise SkinsynthError(f"`--false-positive-rate` must be between 0 and 0.5, got {false_positive_rate}")
    if num_planted < 0:
        raise SkinsynthError(f"`--planted` must be 0 or more, got {num_planted}")
    if update_card:
        report_folder(synthetic)
    real = open_dataset(train, required_splits=(train_split,) + ((heldout_split,) if heldout_split else ()))
    heldout_split = heldout_split or next((s for s in HELDOUT_SPLITS if len(real.get(s, ()))), None)
    if heldout_split is None:
        raise DatasetError(f"the audit measures its false-positive rate on held-out real images, and `{train}` has no non-empty "
                           f"{' or '.join(HELDOUT_SPLITS)} split; give --heldout-split")
    syn = open_dataset(synthetic)
    reference, heldout = real[train_split], real[heldout_split]
    if len(reference) == 0:
        raise DatasetError(f"the real `{train_split}` split of `{train}` is empty: there is nothing to compare with")
    out = reports.prepare_output(out)  # once the inputs are known good: a refused audit leaves no folder behind

    matcher = build_matcher(reference, features, backend=backend, device=device, contrastive=contrastive,
                            keypoints=keypoints, encoder_dir=out, progress=progress)
    train_groups = groups_of(reference)
    calibrated = calibrate(matcher, reference, heldout, train_split=train_split, heldout_split=heldout_split, false_positive_rate=false_positive_rate,
                           threshold=threshold, num_planted=num_planted, seed=seed, progress=progress)
    threshold, fpr = calibrated["threshold"], calibrated["false_positive_rate"]

    names = label_names(syn)
    nearest = {split: nearest_training(matcher, part, f"{matcher.name}: synthetic {split}", progress) for split, part in syn.items()}
    flagged, per_split, class_total, class_flagged = [], {}, np.zeros(len(names), int), np.zeros(len(names), int)
    group_rows: dict[str, list[int]] = {}
    for row, group in enumerate(train_groups):
        group_rows.setdefault(group, []).append(row)
    for split, (sims, idx) in nearest.items():
        labels = np.asarray(syn[split]["label"], dtype=int)
        rows = flag_copies(sims, threshold)
        np.add.at(class_total, labels, 1)
        np.add.at(class_flagged, labels[rows], 1)
        per_split[split] = {"num_synthetic": len(sims), "num_flagged": len(rows), "rate": len(rows) / len(sims) if len(sims) else 0.0}
        flagged += [{"split": split, "row": int(r), "label": names[labels[r]], "nearest_train_row": int(idx[r]), "similarity": round(float(sims[r]), 6),
                     "nearest_group": str(train_groups[idx[r]]), "group_train_rows": group_rows[train_groups[idx[r]]]} for r in rows]
    flagged.sort(key=lambda f: -f["similarity"])
    num_synthetic = int(class_total.sum())

    all_sims = np.concatenate([s for s, _ in nearest.values()]) if nearest else np.zeros(0)
    report = {
        "features": matcher.name,
        "score": matcher.score,
        "threshold": round(threshold, 6),
        "threshold_method": calibrated["threshold_method"],
        "nominal_false_positive_rate": calibrated["nominal_false_positive_rate"],
        "false_positive_rate": fpr,
        "num_synthetic": num_synthetic,
        "num_train": len(reference),
        "num_flagged": len(flagged),
        "rate": len(flagged) / num_synthetic if num_synthetic else 0.0,
        "excess": excess(len(flagged), num_synthetic, fpr["count"], fpr["n"]),
        "planted_copy_recall": calibrated["planted_copy_recall"],
        "per_class": {name: (int(f) / int(t) if t else None) for name, f, t in zip(names, class_flagged, class_total)},
        "per_split": per_split,
        "similarity": _summary(all_sims),
        "baseline": _summary(np.asarray(calibrated["baseline"])),
        "rows": {
            "reference": f"all {len(reference)} rows of real `{train_split}` (searched for each image's nearest neighbour)",
            "encoder": _encoder_rows(matcher.name, train_split),
            **calibrated["rows"],
        },
        "definitions": DEFINITIONS,
        "synthetic": portable_reference(synthetic, out),  # local datasets relative to the report's folder
        "real": portable_reference(train, out),
        "heldout_split": heldout_split,
        "flagged": flagged,
        "heldout_flagged": calibrated["heldout_flagged"],
    }
    report["verdict"] = verdict(report)
    atomic_write_json(out / REPORT, report)
    plot_histogram(all_sims, np.asarray(calibrated["baseline"]), threshold, out / HISTOGRAM, matcher.label, heldout_split)
    plot_closest_pairs(syn, reference, train_groups, nearest, out / PAIRS, num_pairs)
    if update_card:
        add_report(synthetic, "memorization", report, written_in=out, path_fields=("synthetic", "real"))
    return report


def _encoder_rows(features: str, train_split: str) -> str:
    if features == "keypoints":
        return f"none trained; the visual vocabulary that shortlists candidates is fitted on real `{train_split}` descriptors"
    if features == "contrastive":
        return f"real `{train_split}` (the contrastive encoder's training images)"
    return "pretrained, no real rows"


def _summary(values: np.ndarray) -> dict:
    if values is None or len(values) == 0:
        return {}
    return {name: round(float(np.percentile(values, q)), 6) for name, q in (("min", 0), ("median", 50), ("p99", 99), ("max", 100))}


def plot_histogram(similarities: np.ndarray, baseline: np.ndarray, threshold: float, path: Path, score: str, heldout_split: str) -> None:
    """Synthetic-to-train nearest-neighbour similarities against the held-out real (new patients) ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    values = np.concatenate([similarities, baseline, [threshold]])
    span = max(float(values.max() - values.min()), 1e-3)
    bins = np.linspace(values.min() - 0.01 * span, values.max() + 0.01 * span, 60)
    ax.hist(similarities, bins=bins, density=True, alpha=0.6, label=f"synthetic → nearest real train ({len(similarities)})")
    ax.hist(baseline, bins=bins, density=True, alpha=0.6, label=f"held-out real {heldout_split} → nearest real train ({len(baseline)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"copy threshold {threshold:.4g}")
    ax.set_xlabel(score)
    ax.set_ylabel("density (log scale: the tail is what matters)")
    ax.set_yscale("log")
    ax.set_title("Score against the nearest training image")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_closest_pairs(syn, train_split, train_groups, nearest: dict, path: Path, num_pairs: int) -> None:
    """The most similar (synthetic, training image) pairs side by side, most similar first, with the training group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = [(float(sims[r]), split, int(r), int(idx[r])) for split, (sims, idx) in nearest.items() for r in np.argsort(-sims, kind="stable")[:num_pairs] if idx[r] >= 0]
    pairs = sorted(candidates, key=lambda c: -c[0])[:num_pairs]
    if not pairs:
        return
    fig, axes = plt.subplots(len(pairs), 2, figsize=(4.4, 2.2 * len(pairs)), squeeze=False)
    for (sim, split, row, train_row), (left, right) in zip(pairs, axes):
        left.imshow(syn[split][row]["image"].convert("RGB"))
        left.set_title(f"synthetic {split}[{row}]", fontsize=8)
        right.imshow(train_split[train_row]["image"].convert("RGB"))
        right.set_title(f"train[{train_row}] {train_groups[train_row]}  score {sim:.4g}", fontsize=8)
        for ax in (left, right):
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
