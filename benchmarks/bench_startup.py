"""How long the CLI takes to answer `--help` and to refuse a bad recipe or option (no model, no dataset).

    PYTHONPATH=. python benchmarks/bench_startup.py [--runs 5]

Each case runs `python -m skinsynth ARGS` in a fresh process, `--runs` times, and reports the median wall time,
the median CPU time (user + system: steadier than wall time on a shared machine) and the exit code. To measure another checkout with the same interpreter, run it from there (`PYTHONPATH=.`
picks the code). The heavy libraries (torch, diffusers, transformers, datasets) must not load for these cases.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cases(folder: Path) -> dict[str, list[str]]:
    bad = folder / "bad.yaml"
    bad.write_text("name: demo\nclasses: [{name: 'bad name!'}]\nprompts: {templates: ['{class}']}\nsplits: {train: {per_class: 1}}\n")
    return {
        "--help": ["--help"],
        "generate --help": ["generate", "--help"],
        "generate, bad recipe": ["generate", str(bad), "--model", str(folder / "model"), "--out", str(folder / "out")],
        "benchmark, bad option": ["benchmark", "--real", str(folder), "--preset", "nope", "--model", "m", "--out", str(folder / "b")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in cases(Path(tmp)).items():
            times, cpu, codes = [], [], set()
            for _ in range(args.runs):
                started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run([sys.executable, "-m", "skinsynth", *argv], capture_output=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                times.append(time.perf_counter() - started)
                cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                codes.add(done.returncode)
            print(f"{name:24s} {statistics.median(times):.2f} s wall, {statistics.median(cpu):.2f} s CPU (median of {args.runs}; exit {sorted(codes)})")


if __name__ == "__main__":
    main()
