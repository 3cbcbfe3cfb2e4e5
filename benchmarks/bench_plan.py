"""Time planning a large dataset: the demo recipe with 1,000,000 training images (and building every job).

    python benchmarks/bench_plan.py [N]
"""

import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skinsynth.plan import plan
from skinsynth.recipe import parse_recipe

images = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
data = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "demo.yaml").read_text())
data["splits"] = {"train": {"total": images}}
recipe = parse_recipe(data)
started = time.perf_counter()
split_plan = plan(recipe)["train"]
planned = time.perf_counter() - started
started = time.perf_counter()
for i in range(len(split_plan)):
    split_plan.job(i)
built = time.perf_counter() - started
print(f"planned {len(split_plan):,} images in {planned:.2f} s; built every ImageJob (prompt, attributes, seed) in {built:.2f} s more")
