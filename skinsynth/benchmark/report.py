"""What a benchmark leaves in its output folder, and in the synthetic dataset's card.

    results.json                     everything: settings, per-arm metrics (mean, std, 95% CI), every seed's run, baselines,
                                     subgroups, external test sets, and `model-index` (the Hub's form, as in model cards)
    results.csv                      one row per arm and seed, then mean / std / ci95_low / ci95_high rows per arm
    results.md                       the paper's table (balanced accuracy first), baselines, per-subgroup tables
    accuracy_vs_synthetic_share.png  accuracy against the synthetic share of the training set, 95% CI error bars
    confusion-{arm}.png              row-normalised confusion matrix, summed over seeds
    subgroups-{attribute}.png        balanced accuracy per subgroup (Fitzpatrick type, body site, sex, age band) and arm
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..card import add_report
from ..shards import atomic_write_json, atomic_write_text
from .export import model_index
from .metrics import SUMMARY_METRICS, chance, evaluate, majority_baseline, subgroup_metrics, summarize

METRIC_TITLES = {"top1": "Top-1", "top2": "Top-2", "top3": "Top-3", "balanced_accuracy": "Balanced acc.", "macro_f1": "Macro F1"}


def _per_class_value(counts: dict[str, int]):
    """A per-class count as one number when every class has it, else the per-class mapping."""
    values = set(counts.values())
    return values.pop() if len(values) == 1 else dict(counts)


def build_results(settings: dict, class_names: list[str], conditions, samples, results, seconds: float, synthetic: list[str], real_train_labels,
                  test_groups: dict[str, np.ndarray] | None = None, external: dict[str, dict] | None = None, keys: dict | None = None) -> dict:
    """Everything `results.json` holds. `test_groups` maps an attribute (fitzpatrick, body_site, sex, age) to each
    real test image's subgroup; every arm then gets per-subgroup metrics. `external` holds each external test set's
    source, labels (real label ids), dropped-image count and subgroups. `keys` maps (arm, seed) to the run's key
    (what it was trained on; `runs.run_key`)."""
    test_groups, external, keys = test_groups or {}, external or {}, keys or {}
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
            "arm": condition.arm.model_dump(exclude_none=True),  # as asked (scaled); the counts below are what was taken
            "synthetic_dataset": None if condition.synthetic is None else synthetic[condition.synthetic],
            "real_per_class": _per_class_value(first.real_per_class),
            "synthetic_per_class": _per_class_value(first.synthetic_per_class),
            "real_images": real_images,
            "synthetic_images": synthetic_images,
            "synthetic_share": synthetic_images / (real_images + synthetic_images),
            "metrics": summarize(labels, [run.test_scores for _, run in runs], len(class_names)),
            "per_class_recall": {name: (None if any(r[i] is None for r in recalls) else float(np.mean([r[i] for r in recalls]))) for i, name in enumerate(class_names)},
            "confusion_matrix": np.sum([m["confusion_matrix"] for _, m, _ in per_seed], axis=0).tolist(),
            "subgroups": {attribute: subgroup_metrics(labels, [run.test_scores for _, run in runs], groups, attribute, len(class_names))
                          for attribute, groups in test_groups.items()},
            "external": {name: external_metrics(test, [run.external_scores[name] for _, run in runs], len(class_names)) for name, test in external.items()},
            "runs": [
                {"seed": seed, "key": keys.get((condition.name, seed)), **{k: m[k] for k in SUMMARY_METRICS}, "per_class_recall": m["per_class_recall"], "confusion_matrix": m["confusion_matrix"],
                 "epochs_run": run.epochs_run, "best_epoch": run.best_epoch, "best_val_top1": run.best_val_top1, "seconds": round(run.seconds, 2),
                 "data_wait_share": round(run.data_wait_share, 4), "images_per_second": round(run.images_per_second, 1), "history": run.history}
                for seed, m, run in per_seed
            ],
        })
    baselines = {"majority": majority_baseline(real_train_labels, labels, class_names), "chance": chance(labels, len(class_names))}
    return {"settings": settings, "classes": class_names, "test_images": len(labels), "test_class_counts": np.bincount(labels, minlength=len(class_names)).tolist(),
            "seconds": round(seconds, 1), "headline": "balanced_accuracy", "baselines": baselines, "subgroup_attributes": list(test_groups),
            "external": {name: {"source": test["source"], "test_images": len(test["labels"]), "dropped_images": test["dropped"],
                                "test_class_counts": np.bincount(test["labels"], minlength=len(class_names)).tolist(),
                                "subgroup_attributes": list(test["groups"]),
                                "baselines": {"majority": majority_baseline(real_train_labels, test["labels"], class_names), "chance": chance(test["labels"], len(class_names))}}
                         for name, test in external.items()},
            "arms": arms,
            "model-index": [entry for arm in arms for entry in model_index(arm["name"], arm["metrics"], Path(settings["real"].rstrip("/")).name, settings["real"])]}


def external_metrics(test: dict, scores_per_seed: list, num_classes: int) -> dict:
    """One arm on one external test set: the summary metrics (mean, std, CI) and per-subgroup metrics."""
    labels = np.asarray(test["labels"])
    return {"metrics": summarize(labels, scores_per_seed, num_classes),
            "subgroups": {attribute: subgroup_metrics(labels, scores_per_seed, groups, attribute, num_classes) for attribute, groups in test["groups"].items()}}


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
    """The paper's table with balanced accuracy first (the headline on an imbalanced test set), top-1/2/3 as in the
    paper, in percent (mean ± std over seeds), and beside the arms what a majority-class guess and chance score."""
    settings = summary["settings"]
    seeds = settings["seeds"]
    counts = summary["test_class_counts"]
    largest = int(np.argmax(counts))
    lines = [
        f"Classifier `{settings['model']}` at {settings['image_size']} px, tested on {summary['test_images']} real test images of `{settings['real']}`; "
        + (f"mean ± std over {seeds} seeds." if seeds > 1 else "one seed.")
        + f" Early stopping by validation {settings['select_by']}"
        + (" (the paper's choice)." if settings.get("preset") == "akrout2023" and settings["select_by"] == "top1" else ".")
        + f" The largest class (`{summary['classes'][largest]}`) is {100 * counts[largest] / sum(counts):.1f}% of the test set, so balanced"
        " accuracy is the headline: a majority-class guess scores its share in top-1 but only 1 / classes in balanced accuracy.",
        "",
        "| Arm | Real / class | Synthetic / class | Balanced acc. (%) | Top-1 (%) | Top-2 (%) | Top-3 (%) | Balanced acc. 95% CI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for arm in summary["arms"]:
        m = arm["metrics"]
        lo, hi = m["balanced_accuracy"]["ci95"]
        lines.append(f"| {arm['name']} | {_count(arm['real_per_class'])} | {_count(arm['synthetic_per_class'])} | "
                     + " | ".join(_cell(m[k], seeds) for k in ("balanced_accuracy", "top1", "top2", "top3")) + f" | {100 * lo:.1f}–{100 * hi:.1f} |")
    majority, uniform = summary["baselines"]["majority"], summary["baselines"]["chance"]
    for name, values in ((f"majority class (`{majority['class']}`)", majority), ("chance (uniform guess)", uniform)):
        lines.append(f"| *{name}* | | | " + " | ".join(f"{100 * values[k]:.2f}" for k in ("balanced_accuracy", "top1", "top2", "top3")) + " | |")
    return "\n".join(lines + subgroup_markdown(summary) + external_markdown(summary)) + "\n"


def external_markdown(summary: dict) -> list[str]:
    """Per external test set: every arm's balanced accuracy and top-1/2/3 there, beside its baselines."""
    lines = []
    seeds = summary["settings"]["seeds"]
    for name, info in summary.get("external", {}).items():
        lines += ["", f"External test set `{info['source']}` ({info['test_images']} images of the trained classes"
                  + (f"; {info['dropped_images']} of other classes left out" if info["dropped_images"] else "") + "): cross-dataset generalisation.", "",
                  "| Arm | Balanced acc. (%) | Top-1 (%) | Top-2 (%) | Top-3 (%) | Balanced acc. 95% CI |",
                  "| --- | ---: | ---: | ---: | ---: | :---: |"]
        for arm in summary["arms"]:
            m = arm["external"][name]["metrics"]
            lo, hi = m["balanced_accuracy"]["ci95"]
            lines.append(f"| {arm['name']} | " + " | ".join(_cell(m[k], seeds) for k in ("balanced_accuracy", "top1", "top2", "top3")) + f" | {100 * lo:.1f}–{100 * hi:.1f} |")
        majority, uniform = info["baselines"]["majority"], info["baselines"]["chance"]
        for label, values in ((f"majority class (`{majority['class']}`)", majority), ("chance (uniform guess)", uniform)):
            lines.append(f"| *{label}* | " + " | ".join(f"{100 * values[k]:.2f}" for k in ("balanced_accuracy", "top1", "top2", "top3")) + " | |")
    return lines


def subgroup_markdown(summary: dict) -> list[str]:
    """Per attribute, a table of balanced accuracy (%, mean [95% CI]) per subgroup (rows, with image counts) and arm."""
    lines = []
    arms = summary["arms"]
    for attribute in summary.get("subgroup_attributes", []):
        groups = arms[0]["subgroups"][attribute]
        lines += ["", f"Balanced accuracy (%) by `{attribute}` on the real test set, mean [95% CI]:", "",
                  "| " + attribute + " | images | classes | " + " | ".join(a["name"] for a in arms) + " |",
                  "| --- | ---: | ---: |" + " ---: |" * len(arms)]
        for group, info in groups.items():
            cells = []
            for arm in arms:
                m = arm["subgroups"][attribute][group]["balanced_accuracy"]
                cells.append(f"{100 * m['mean']:.1f} [{100 * m['ci95'][0]:.0f}–{100 * m['ci95'][1]:.0f}]")
            lines.append(f"| {group} | {info['count']} | {info['classes']} | " + " | ".join(cells) + " |")
    return lines


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
    majority, uniform = summary["baselines"]["majority"], summary["baselines"]["chance"]
    ax.axhline(100 * majority["top1"], color="grey", linestyle="--", linewidth=1, label="majority class, top-1")
    ax.axhline(100 * uniform["balanced_accuracy"], color="grey", linestyle=":", linewidth=1, label="majority / chance, balanced")
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


def plot_subgroups(summary: dict, attribute: str, path: Path) -> None:
    """Balanced accuracy per subgroup of `attribute`, one bar per arm, 95% CI error bars; image counts under the groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    groups = list(arms[0]["subgroups"][attribute])
    width = 0.8 / len(arms)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(groups) * max(1, len(arms) / 2)), 4.2))
    for i, arm in enumerate(arms):
        values = [arm["subgroups"][attribute][g]["balanced_accuracy"] for g in groups]
        y = np.array([100 * v["mean"] for v in values])
        ci = np.array([[100 * v["ci95"][0], 100 * v["ci95"][1]] for v in values])
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, y, width, yerr=np.abs(ci.T - y), capsize=2, label=arm["name"])
    counts = [arms[0]["subgroups"][attribute][g]["count"] for g in groups]
    ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(groups, counts)], rotation=45 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center", fontsize=7)
    ax.axhline(100 * summary["baselines"]["chance"]["balanced_accuracy"], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_ylabel("balanced accuracy on the real test set (%)")
    ax.set_title(f"Balanced accuracy by {attribute} (95% bootstrap CI)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
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
    for attribute in summary.get("subgroup_attributes", []):
        plot_subgroups(summary, attribute, out / f"subgroups-{attribute}.png")


def card_report(summary: dict, synthetic_dataset: str) -> dict:
    """`reports/benchmark.json` of one synthetic dataset: its arms and the real-only ones they compare with."""
    settings = summary["settings"]
    return {
        "model": settings["model"], "real": settings["real"], "synthetic": settings["synthetic"], "image_size": settings["image_size"],
        "epochs": settings["epochs"], "seeds": settings["seeds"], "command": settings["command"], "headline": summary["headline"],
        "baselines": summary["baselines"], "subgroup_attributes": summary["subgroup_attributes"], "external": summary["external"],
        "arms": [
            {"name": arm["name"], "real_per_class": arm["real_per_class"], "synthetic_per_class": arm["synthetic_per_class"], "metrics": arm["metrics"],
             "subgroups": arm["subgroups"], "external": {name: value["metrics"] for name, value in arm["external"].items()}}
            for arm in summary["arms"] if arm["synthetic_dataset"] in (None, synthetic_dataset)
        ],
    }


def update_card(dataset: Path, summary: dict, synthetic_dataset: str, out: Path) -> Path:
    """Write `DATASET/reports/benchmark.json`, then rebuild the dataset card from it. `summary` names local inputs
    relative to the benchmark's folder `out`; the card's copy names them relative to its own."""
    return add_report(dataset, "benchmark", card_report(summary, synthetic_dataset), written_in=out, path_fields=("model", "real", "synthetic", "external.*.source"))
