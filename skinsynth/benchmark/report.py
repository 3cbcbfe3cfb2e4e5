"""What a benchmark leaves in its output folder, and in the synthetic dataset's card.

    results.json                     everything: settings, per-arm metrics (mean, std, 95% CI) and every seed's run
    results.csv                      one row per arm and seed, then mean / std / ci95_low / ci95_high rows per arm
    results.md                       the table in the paper's shape: top-1 / top-2 / top-3 and balanced accuracy
    accuracy_vs_synthetic_share.png  accuracy against the synthetic share of the training set, 95% CI error bars
    confusion-{arm}.png              row-normalised confusion matrix, summed over seeds
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..card import add_report
from ..shards import atomic_write_json, atomic_write_text
from .metrics import SUMMARY_METRICS, evaluate, summarize

METRIC_TITLES = {"top1": "Top-1", "top2": "Top-2", "top3": "Top-3", "balanced_accuracy": "Balanced acc.", "macro_f1": "Macro F1"}


def _per_class_value(counts: dict[str, int]):
    """A per-class count as one number when every class has it, else the per-class mapping."""
    values = set(counts.values())
    return values.pop() if len(values) == 1 else dict(counts)


def build_results(settings: dict, class_names: list[str], conditions, samples, results, seconds: float, synthetic: list[str]) -> dict:
    arms = []
    for condition in conditions:
        runs = results[condition.name]
        labels = runs[0][1].test_labels
        first = samples[(condition.name, runs[0][0])]
        real_images, synthetic_images = sum(first.real_per_class.values()), sum(first.synthetic_per_class.values())
        per_seed = [(seed, evaluate(labels, run.test_scores, class_names), run) for seed, run in runs]
        recalls = [[r for r in m["per_class_recall"].values()] for _, m, _ in per_seed]
        arms.append({
            "name": condition.name,
            "synthetic_dataset": None if condition.synthetic is None else synthetic[condition.synthetic],
            "real_per_class": _per_class_value(first.real_per_class),
            "synthetic_per_class": _per_class_value(first.synthetic_per_class),
            "real_images": real_images,
            "synthetic_images": synthetic_images,
            "synthetic_share": synthetic_images / (real_images + synthetic_images),
            "metrics": summarize(labels, [run.test_scores for _, run in runs], len(class_names)),
            "per_class_recall": {name: (None if any(r[i] is None for r in recalls) else float(np.mean([r[i] for r in recalls]))) for i, name in enumerate(class_names)},
            "confusion_matrix": np.sum([m["confusion_matrix"] for _, m, _ in per_seed], axis=0).tolist(),
            "runs": [
                {"seed": seed, **{k: m[k] for k in SUMMARY_METRICS}, "per_class_recall": m["per_class_recall"], "confusion_matrix": m["confusion_matrix"],
                 "epochs_run": run.epochs_run, "best_epoch": run.best_epoch, "best_val_top1": run.best_val_top1, "seconds": round(run.seconds, 2),
                 "data_wait_share": round(run.data_wait_share, 4), "images_per_second": round(run.images_per_second, 1), "history": run.history}
                for seed, m, run in per_seed
            ],
        })
    return {"settings": settings, "classes": class_names, "test_images": len(labels), "seconds": round(seconds, 1), "arms": arms}


def results_csv(summary: dict) -> str:
    columns = ["arm", "seed", "real_images", "synthetic_images", "synthetic_share", *SUMMARY_METRICS, "best_epoch", "epochs_run", "seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for arm in summary["arms"]:
        sizes = {"arm": arm["name"], "real_images": arm["real_images"], "synthetic_images": arm["synthetic_images"], "synthetic_share": round(arm["synthetic_share"], 4)}
        for run in arm["runs"]:
            writer.writerow({**sizes, "seed": run["seed"], **{k: round(run[k], 6) for k in SUMMARY_METRICS}, "best_epoch": run["best_epoch"], "epochs_run": run["epochs_run"], "seconds": run["seconds"]})
        for label, pick in (("mean", lambda m: m["mean"]), ("std", lambda m: m["std"]), ("ci95_low", lambda m: m["ci95"][0]), ("ci95_high", lambda m: m["ci95"][1])):
            writer.writerow({**sizes, "seed": label, **{k: round(pick(arm["metrics"][k]), 6) for k in SUMMARY_METRICS}})
    return buffer.getvalue()


def _count(per_class) -> str:
    return str(per_class) if isinstance(per_class, int) else f"{min(per_class.values())}–{max(per_class.values())}"


def _cell(metric: dict, seeds: int) -> str:
    text = f"{100 * metric['mean']:.2f}"
    return text + (f" ± {100 * metric['std']:.2f}" if seeds > 1 else "")


def results_markdown(summary: dict) -> str:
    """The paper's table: one row per arm, accuracies in percent (mean ± std over seeds), 95% CI of top-1."""
    settings = summary["settings"]
    seeds = settings["seeds"]
    lines = [
        f"Classifier `{settings['model']}` at {settings['image_size']} px, tested on {summary['test_images']} real test images of `{settings['real']}`; "
        + (f"mean ± std over {seeds} seeds." if seeds > 1 else "one seed."),
        "",
        "| Arm | Real / class | Synthetic / class | Top-1 (%) | Top-2 (%) | Top-3 (%) | Balanced acc. (%) | Top-1 95% CI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for arm in summary["arms"]:
        m = arm["metrics"]
        lo, hi = m["top1"]["ci95"]
        lines.append(f"| {arm['name']} | {_count(arm['real_per_class'])} | {_count(arm['synthetic_per_class'])} | "
                     + " | ".join(_cell(m[k], seeds) for k in ("top1", "top2", "top3", "balanced_accuracy")) + f" | {100 * lo:.1f}–{100 * hi:.1f} |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_share(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for metric, marker in (("top1", "o"), ("balanced_accuracy", "s")):
        arms = sorted(summary["arms"], key=lambda a: a["synthetic_share"])
        x = np.array([a["synthetic_share"] for a in arms])
        y = np.array([a["metrics"][metric]["mean"] for a in arms])
        ci = np.array([a["metrics"][metric]["ci95"] for a in arms])
        ax.errorbar(100 * x, 100 * y, yerr=100 * np.abs(ci.T - y), fmt=marker, capsize=3, label=METRIC_TITLES[metric])
        if metric == "top1":
            for a, xi, yi in zip(arms, x, y):
                ax.annotate(a["name"], (100 * xi, 100 * yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(-5, 105)
    ax.set_xlabel("synthetic share of the training set (%)")
    ax.set_ylabel("accuracy on the real test set (%)")
    ax.set_title("Accuracy vs synthetic share (95% bootstrap CI)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(arm: dict, class_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(arm["confusion_matrix"], dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.8 + 0.55 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), rate in np.ndenumerate(rates):
        ax.text(j, i, f"{rate:.2f}", ha="center", va="center", fontsize=7, color="white" if rate > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{arm['name']}: recall per true class", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, summary: dict) -> None:
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "results.csv", results_csv(summary))
    atomic_write_text(out / "results.md", results_markdown(summary))
    plot_accuracy_vs_share(summary, out / "accuracy_vs_synthetic_share.png")
    for arm in summary["arms"]:
        plot_confusion(arm, summary["classes"], out / f"confusion-{arm['name']}.png")


def card_report(summary: dict, synthetic_dataset: str) -> dict:
    """`reports/benchmark.json` of one synthetic dataset: its arms and the real-only ones they compare with."""
    settings = summary["settings"]
    return {
        "model": settings["model"], "real": settings["real"], "synthetic": settings["synthetic"], "image_size": settings["image_size"],
        "epochs": settings["epochs"], "seeds": settings["seeds"], "command": settings["command"],
        "arms": [
            {"name": arm["name"], "real_per_class": arm["real_per_class"], "synthetic_per_class": arm["synthetic_per_class"], "metrics": arm["metrics"]}
            for arm in summary["arms"] if arm["synthetic_dataset"] in (None, synthetic_dataset)
        ],
    }


def update_card(dataset: Path, summary: dict, synthetic_dataset: str) -> Path:
    """Write `DATASET/reports/benchmark.json`, then rebuild the dataset card from it."""
    return add_report(dataset, "benchmark", card_report(summary, synthetic_dataset))
