"""Print the headline of a `skinsynth benchmark` run from its results.json: every arm's balanced accuracy (mean and
95% CI), the synthetic-only / real-only ratio at the same count per class, and the majority-class and chance
baselines of its test set. Nothing is typed by hand: README.md's figures are this script's output.

    python examples/ratio.py bench-output/ham10000-cpu-flow/benchmark/results.json
"""

import json
import sys
from pathlib import Path


def headline(results: dict) -> str:
    arms = results["arms"]
    lines = ["| arm | real / synthetic per class | balanced accuracy (mean, 95% CI) | top-1 |", "| --- | --- | --- | --- |"]
    for arm in arms:
        b, t = arm["metrics"]["balanced_accuracy"], arm["metrics"]["top1"]
        lines.append(f"| {arm['name']} | {arm['real_per_class']} / {arm['synthetic_per_class']} | "
                     f"{100 * b['mean']:.1f} % ({100 * b['ci95'][0]:.1f}–{100 * b['ci95'][1]:.1f}) | {100 * t['mean']:.1f} % |")
    majority, chance = results["baselines"]["majority"], results["baselines"]["chance"]
    lines.append(f"| majority class (always `{majority['class']}`) | – | {100 * majority['balanced_accuracy']:.1f} % | {100 * majority['top1']:.1f} % |")
    lines.append(f"| chance ({len(results['classes'])} classes, uniform guess) | – | {100 * chance['balanced_accuracy']:.1f} % | {100 * chance['top1']:.1f} % |")
    synthetic = [a for a in arms if a["real_images"] == 0]
    for arm in synthetic:
        twins = [a for a in arms if a["synthetic_images"] == 0 and a["real_per_class"] == arm["synthetic_per_class"]]
        for real in twins:
            ratio = arm["metrics"]["balanced_accuracy"]["mean"] / real["metrics"]["balanced_accuracy"]["mean"]
            lines.append(f"\nsynthetic-only / real-only balanced accuracy at {arm['synthetic_per_class']} per class "
                         f"({arm['name']} / {real['name']}): **{ratio:.2f}**")
    return "\n".join(lines)


if __name__ == "__main__":
    print(headline(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
