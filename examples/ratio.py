"""Print the headline of a `skinsynth benchmark` run from its results.json and runs/: every arm's balanced accuracy
(mean and 95% CI), the majority-class and chance baselines of its test set, and each synthetic-only / real-only
ratio at the same count per class with a paired bootstrap interval (the same resampled test images for both arms).
Nothing is typed by hand: README.md's figures are this script's output.

    python examples/ratio.py BENCH/results.json [--fidelity FIDELITY.json …]

`--fidelity` adds, for a filtered synthetic dataset, what its filter was: the classifiers' own balanced accuracy on
the real test split (from `skinsynth audit fidelity … --classifier FILTER --real REAL`). A real-only arm with
`real_seeds: N` (the real images N seeds drew, pooled: what a filter of N seed classifiers saw) is set beside the arm
it pools, so a reader sees how much real data the filter itself stands for.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from skinsynth.benchmark.metrics import paired_ratio


def run_scores(bench: Path, arm: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """The test labels and every seed's test scores of an arm, from BENCH/runs/ARM-seedN.json."""
    runs = [json.loads((bench / "runs" / f"{arm['name']}-seed{run['seed']}.json").read_text(encoding="utf-8")) for run in arm["runs"]]
    return np.asarray(runs[0]["test_labels"]), [np.asarray(run["test_scores"]) for run in runs]


def headline(results: dict, bench: Path) -> str:
    arms = results["arms"]
    lines = ["| arm | real / synthetic per class | balanced accuracy (mean, 95% CI) | top-1 |", "| --- | --- | --- | --- |"]
    for arm in arms:
        b, t = arm["metrics"]["balanced_accuracy"], arm["metrics"]["top1"]
        lines.append(f"| {arm['name']} | {_count(arm['real_per_class'])} / {_count(arm['synthetic_per_class'])} | "
                     f"{100 * b['mean']:.1f} % ({100 * b['ci95'][0]:.1f}–{100 * b['ci95'][1]:.1f}) | {100 * t['mean']:.1f} % |")
    for arm in (a for a in arms if a["synthetic_images"] == 0):
        seeds = ", ".join(f"seed {run['seed']}: {100 * run['balanced_accuracy']:.1f} %" for run in arm["runs"])
        lines.append(f"| {arm['name']}, each seed (a classifier a filter may use) | | {seeds} | |")
    majority, chance = results["baselines"]["majority"], results["baselines"]["chance"]
    lines.append(f"| majority class (always `{majority['class']}`) | – | {100 * majority['balanced_accuracy']:.1f} % | {100 * majority['top1']:.1f} % |")
    lines.append(f"| chance ({len(results['classes'])} classes, uniform guess) | – | {100 * chance['balanced_accuracy']:.1f} % | {100 * chance['top1']:.1f} % |")
    for arm in (a for a in arms if a["real_images"] == 0):
        for real in (a for a in arms if a["synthetic_images"] == 0 and a["real_per_class"] == arm["synthetic_per_class"]):
            ratio = paired_ratio(*_paired(bench, arm, real), len(results["classes"]))
            lines.append(f"\nsynthetic-only / real-only balanced accuracy at {arm['synthetic_per_class']} per class ({arm['name']} / {real['name']}): "
                         f"**{ratio['value']:.2f}** (paired bootstrap 95% CI {ratio['ci95'][0]:.2f}–{ratio['ci95'][1]:.2f}, {ratio['num_resamples']} resamples)")
    for pooled in (a for a in arms if a.get("arm", {}).get("real_seeds")):
        definition = {k: v for k, v in pooled["arm"].items() if k not in ("name", "real_seeds")}
        for real in (a for a in arms if {k: v for k, v in a.get("arm", {}).items() if k != "name"} == definition):
            ratio = paired_ratio(*_paired(bench, pooled, real), len(results["classes"]))
            lines.append(f"\nthe real images of {pooled['arm']['real_seeds']} {real['name']} seeds pooled ({pooled['name']}: {pooled['real_images']} images, "
                         f"what a filter of {pooled['arm']['real_seeds']} {real['name']} classifiers saw) / {real['name']}: **{ratio['value']:.2f}** "
                         f"(paired bootstrap 95% CI {ratio['ci95'][0]:.2f}–{ratio['ci95'][1]:.2f}): what the filter's extra real data is worth by itself")
    return "\n".join(lines)


def _count(per_class) -> str:
    """An arm's images per class: one number, or the range when classes differ (a pooled arm, a small class)."""
    return str(per_class) if not isinstance(per_class, dict) else f"{min(per_class.values())}–{max(per_class.values())}"


def _paired(bench: Path, arm: dict, baseline: dict) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    labels, scores = run_scores(bench, arm)
    baseline_labels, baseline_scores = run_scores(bench, baseline)
    assert (labels == baseline_labels).all(), "both arms are tested on the same real test images"
    return labels, scores, baseline_scores


def filter_line(path: Path) -> str:
    report = json.loads(path.read_text(encoding="utf-8"))
    real = report["real_fidelity"]
    return (f"filter `{', '.join(Path(c).name for c in report['classifiers'])}` ({len(report['classifiers'])} classifiers): balanced accuracy "
            f"{100 * real['balanced_accuracy']:.1f} % on {real['n']} real test images; on the images it judged: {100 * report['synthetic_fidelity']['balanced_accuracy']:.1f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--fidelity", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    print(headline(json.loads(args.results.read_text(encoding="utf-8")), args.results.parent))
    for path in args.fidelity:
        print(filter_line(path))
