"""Print the conditioning ablation's table (README.md) from the fidelity reports `conditioning_ablation.sh` wrote:
one row per variant, in the script's order, every figure read from WORK/VARIANT/fidelity/fidelity.json.

    python examples/ablation_table.py bench-output/conditioning-ablation
"""

import json
import sys
from pathlib import Path

ORDER = ["old", "pooled-text", "attention-everywhere", "zero-snr-v", "min-snr", "norm-groups", "autoencoder-2000", "new"]


def table(work: Path) -> str:
    lines = ["| variant | fidelity (balanced) | real test (ceiling) | fidelity / ceiling | autoencoded real | prompt following | seed following | class / seed distance |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    names = [n for n in ORDER if (work / n / "fidelity" / "fidelity.json").is_file()]
    names += sorted(p.parent.parent.name for p in work.glob("*/fidelity/fidelity.json") if p.parent.parent.name not in ORDER)
    for name in names:
        report = json.loads((work / name / "fidelity" / "fidelity.json").read_text(encoding="utf-8"))
        synthetic, real = report["synthetic_fidelity"]["balanced_accuracy"], report["real_fidelity"]["balanced_accuracy"]
        autoencoded = report.get("reconstruction_fidelity", {}).get("balanced_accuracy")
        shared = report.get("shared_seeds", {})
        distance = shared.get("class_to_seed_distance")
        lines.append(f"| {name} | {synthetic:.3f} | {real:.3f} | **{synthetic / real:.2f}** | {'—' if autoencoded is None else f'{autoencoded:.3f}'} | "
                     f"{shared.get('prompt_following', float('nan')):.2f} | {shared.get('seed_following', float('nan')):.2f} | "
                     f"{'—' if distance is None else f'{distance:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
