"""Classification metrics on the real test set, computed offline with numpy.

Every metric is a function of the true labels and the class scores (logits or probabilities) of the test images:
top-k accuracy, balanced accuracy (mean recall over the classes present in the test set), macro F1 (over the
same classes), per-class recall and the confusion matrix. Confidence intervals are percentile bootstraps over
the test images; for an arm repeated over seeds, each resample averages the seeds, so the interval is that of
the seed-averaged metric.
"""

from __future__ import annotations

import numpy as np

SUMMARY_METRICS = ("top1", "top2", "top3", "balanced_accuracy", "macro_f1")
SELECT_BY = ("balanced_accuracy", "top1", "loss")  # validation metrics early stopping can keep the best epoch by


def top_k_correct(y_true: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Per image: is the true class among the k highest scores? Ties count against the true class."""
    true_scores = scores[np.arange(len(y_true)), y_true]
    rank = (scores > true_scores[:, None]).sum(axis=1) + (scores == true_scores[:, None]).sum(axis=1) - 1
    return rank < k


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _recall_and_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class recall and F1 from a confusion matrix (or a stack of them), and which classes are present."""
    true_positives = np.diagonal(confusion, axis1=-2, axis2=-1)
    support = confusion.sum(axis=-1)
    predicted = confusion.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, true_positives / support, np.nan)
        f1 = np.where(support + predicted > 0, 2 * true_positives / (support + predicted), 0.0)
    return recall, f1, support > 0


def balanced_accuracy(confusion: np.ndarray) -> np.ndarray:
    recall, _, present = _recall_and_f1(confusion)
    return np.nansum(recall, axis=-1) / present.sum(axis=-1)


def macro_f1(confusion: np.ndarray) -> np.ndarray:
    _, f1, present = _recall_and_f1(confusion)
    return (f1 * present).sum(axis=-1) / present.sum(axis=-1)


def evaluate(y_true, scores, class_names: list[str]) -> dict:
    """All metrics of one set of predictions: the summary numbers, per-class recall and the confusion matrix."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    confusion = confusion_matrix(y_true, scores.argmax(axis=1), len(class_names))
    recall, _, _ = _recall_and_f1(confusion)
    return {
        **{f"top{k}": float(top_k_correct(y_true, scores, k).mean()) for k in (1, 2, 3)},
        "balanced_accuracy": float(balanced_accuracy(confusion)),
        "macro_f1": float(macro_f1(confusion)),
        "per_class_recall": {name: (None if np.isnan(r) else float(r)) for name, r in zip(class_names, recall)},
        "confusion_matrix": confusion.tolist(),
    }


def _test_draws(n: int, num_resamples: int, seed: int) -> np.ndarray:
    """(num_resamples, n) test-image indices drawn with replacement: the same draws for every arm and seed."""
    return np.random.default_rng(seed).integers(0, n, size=(num_resamples, n))


def _resampled(y_true: np.ndarray, scores_per_seed: list, num_classes: int, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each summary metric on every resample of the test images, averaged over the seeds' runs."""
    num_resamples = len(draws)
    values = {name: np.zeros(num_resamples) for name in SUMMARY_METRICS}
    for scores in scores_per_seed:
        scores = np.asarray(scores)
        for k in (1, 2, 3):
            values[f"top{k}"] += top_k_correct(y_true, scores, k)[draws].mean(axis=1)
        pairs = y_true[draws] * num_classes + scores.argmax(axis=1)[draws]
        confusions = np.stack([np.bincount(row, minlength=num_classes * num_classes) for row in pairs]).reshape(num_resamples, num_classes, num_classes)
        values["balanced_accuracy"] += balanced_accuracy(confusions)
        values["macro_f1"] += macro_f1(confusions)
    return {name: v / len(scores_per_seed) for name, v in values.items()}


def bootstrap_ci(y_true, scores_per_seed: list, num_classes: int, num_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap interval of each summary metric over the test images, averaged over the seeds' runs.

    Every resample draws test images with replacement (the same draw for every seed, since all runs are tested on
    the same images) and averages the metric over the seeds.
    """
    y_true = np.asarray(y_true)
    values = _resampled(y_true, scores_per_seed, num_classes, _test_draws(len(y_true), num_resamples, seed))
    tail = (1 - level) / 2 * 100
    return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for name, v in values.items()}


def paired_ratio(y_true, numerator_scores: list, denominator_scores: list, num_classes: int, metric: str = "balanced_accuracy",
                 num_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The ratio of two arms' seed-averaged `metric` on the same test images (e.g. synthetic-only / real-only), with a
    paired percentile bootstrap interval: each resample draws the same test images for both arms, so the test set's
    own luck, shared by the two, cancels instead of widening the interval the way dividing two separate intervals would."""
    y_true = np.asarray(y_true)
    draws = _test_draws(len(y_true), num_resamples, seed)
    top = _resampled(y_true, numerator_scores, num_classes, draws)[metric]
    bottom = _resampled(y_true, denominator_scores, num_classes, draws)[metric]
    point = np.mean([evaluate(y_true, s, [str(i) for i in range(num_classes)])[metric] for s in numerator_scores]) / np.mean(
        [evaluate(y_true, s, [str(i) for i in range(num_classes)])[metric] for s in denominator_scores])
    ratios = top / np.maximum(bottom, 1e-12)
    tail = (1 - level) / 2 * 100
    return {"value": float(point), "ci95": [float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))], "num_resamples": num_resamples}


def summarize(y_true, scores_per_seed: list, num_classes: int, num_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Per summary metric: mean and sample standard deviation (ddof=1; 0.0 for one seed) over the seeds' runs,
    and the 95% bootstrap interval of the seed-averaged metric."""
    y_true = np.asarray(y_true)
    per_seed = [evaluate(y_true, scores, [str(i) for i in range(num_classes)]) for scores in scores_per_seed]
    intervals = bootstrap_ci(y_true, scores_per_seed, num_classes, num_resamples, seed)
    summary = {}
    for name in SUMMARY_METRICS:
        values = np.array([run[name] for run in per_seed])
        summary[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "ci95": intervals[name]}
    return summary


def majority_baseline(train_labels, test_labels, class_names: list[str]) -> dict:
    """The summary metrics of always guessing the real training split's most frequent classes, in order (the
    most frequent first, ties to the lower label id): what a classifier must beat to have learnt anything."""
    num_classes = len(class_names)
    order = np.argsort(-np.bincount(np.asarray(train_labels), minlength=num_classes), kind="stable")
    scores = np.empty(num_classes, dtype=np.float32)
    scores[order] = np.arange(num_classes, 0, -1)
    test_labels = np.asarray(test_labels)
    metrics = evaluate(test_labels, np.tile(scores, (len(test_labels), 1)), class_names)
    return {"class": class_names[int(order[0])], **{name: metrics[name] for name in SUMMARY_METRICS}}


def chance(test_labels, num_classes: int) -> dict:
    """Summary metrics of a uniformly random guess among the classes, in expectation: top-k is k / classes,
    balanced accuracy 1 / classes, and macro F1 (of the expected precision p and recall 1 / classes of each
    present class, p its share of the test set) the mean of 2 p / (classes p + 1)."""
    test_labels = np.asarray(test_labels)
    share = np.bincount(test_labels, minlength=num_classes) / len(test_labels)
    present = share > 0
    f1 = 2 * share[present] / (num_classes * share[present] + 1)
    return {**{f"top{k}": min(k, num_classes) / num_classes for k in (1, 2, 3)}, "balanced_accuracy": 1 / num_classes, "macro_f1": float(f1.mean())}


# ---- subgroups --------------------------------------------------------------------------------------------------

SUBGROUP_ATTRIBUTES = ("fitzpatrick", "body_site", "sex", "age")  # `prepare`'s attribute columns; ages go into bands
SUBGROUP_METRICS = ("balanced_accuracy", "top1")
AGE_BANDS = ((0, 30, "0-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+"))
UNKNOWN = "unknown"


def age_band(age) -> str:
    """An age (a number, or a string such as "45") as its band; missing or unreadable ages are "unknown"."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        return UNKNOWN
    return next((name for low, high, name in AGE_BANDS if low <= years < high), UNKNOWN)


def group_values(attribute: str, values) -> np.ndarray:
    """Each test image's subgroup for `attribute`: the value itself (ages: their band); missing values "unknown"."""
    if attribute == "age":
        return np.array([age_band(v) for v in values], dtype=object)
    return np.array([UNKNOWN if v is None or str(v).strip() in ("", UNKNOWN) else str(v) for v in values], dtype=object)


def _group_order(attribute: str, groups) -> list[str]:
    known = sorted({g for g in groups if g != UNKNOWN}, key=lambda g: [b[2] for b in AGE_BANDS].index(g) if attribute == "age" else g)
    return known + ([UNKNOWN] if UNKNOWN in set(groups) else [])


def subgroup_metrics(y_true, scores_per_seed: list, groups: np.ndarray, attribute: str, num_classes: int, num_resamples: int = 1000, seed: int = 0) -> dict:
    """Per subgroup of the test set: its image count, how many classes it holds, and balanced accuracy and top-1
    (mean ± std over seeds, 95% bootstrap interval over the subgroup's images). Balanced accuracy averages the
    recall of the classes present in the subgroup, so it stays comparable across subgroups with other class mixes."""
    y_true = np.asarray(y_true)
    result = {}
    for group in _group_order(attribute, groups):
        mask = groups == group
        metrics = summarize(y_true[mask], [np.asarray(s)[mask] for s in scores_per_seed], num_classes, num_resamples, seed)
        result[group] = {"count": int(mask.sum()), "classes": len(np.unique(y_true[mask])), **{k: metrics[k] for k in SUBGROUP_METRICS}}
    return result
