"""Disk and time to open a local dataset folder: `datasets.load_dataset(DIR)` (what benchmark, audits, filter and
finetune used) against `skinsynth.data.open_dataset(DIR)` (memory-maps the Arrow shards in place).

    PYTHONPATH=. python benchmarks/bench_open_dataset.py [--source ../shared/data/ham10000] [--copies 4]

The dataset is all of HAM10000 prepared by `skinsynth prepare` (original JPEG bytes), repeated `--copies` times
as extra shards to stand for a bigger set. Each way opens it with an empty Hugging Face cache (a temporary
HF_DATASETS_CACHE) and then reads every label and the first and last image; "cache MB" is what it left in that cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OPEN = {
    "load_dataset": "import datasets; ds = datasets.load_dataset(DIR)",
    "open_dataset": "from skinsynth.data import open_dataset; ds = open_dataset(DIR)",
}
READ = "train = ds['train']; labels = train['label'][:]; train[0]['image'].size; train[len(train) - 1]['image'].size"


def folder_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "ham10000", help="HAM10000 folder (images/ + metadata.csv)")
    parser.add_argument("--copies", type=int, default=4, help="times the train shards are repeated (default: 4)")
    args = parser.parse_args()
    from skinsynth.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "ham10000"
        prepare(args.source, "ham10000", dataset, progress=False)
        shards = sorted((dataset / "data").glob("train-*.arrow"))
        total = len(shards) * args.copies
        for copy in range(1, args.copies):  # the same shards again, under new names: one longer train split
            for i, shard in enumerate(shards):
                shutil.copyfile(shard, dataset / "data" / f"train-{copy * len(shards) + i:05d}-of-{total:05d}.arrow")
        for i, shard in enumerate(shards):
            shard.rename(dataset / "data" / f"train-{i:05d}-of-{total:05d}.arrow")
        (dataset / "README.md").unlink()  # its `configs` list the old shard names; without it both ways find data/*
        print(f"dataset: {folder_mb(dataset):.0f} MB ({total} train shards + validation and test)")
        print(f"load average before: {os.getloadavg()[0]:.1f}\n")
        print("| way | seconds (open + read) | cache MB | extra disk vs dataset |")
        print("| --- | ---: | ---: | ---: |")
        for name, code in OPEN.items():
            cache = Path(tmp) / f"cache-{name}"
            env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(REPO)}
            script = f"import time; DIR = {str(dataset)!r}; t = time.perf_counter(); {code}; {READ}; print(time.perf_counter() - t)"
            seconds = float(subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True).stdout.split()[-1])
            used = folder_mb(cache) if cache.exists() else 0.0
            print(f"| {name} | {seconds:.1f} | {used:.0f} | {used / folder_mb(dataset):.2f}x |")


if __name__ == "__main__":
    main()
