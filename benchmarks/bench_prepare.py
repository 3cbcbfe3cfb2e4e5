"""How long `skinsynth prepare` takes on all of HAM10000, and how big the result is compared to the source.

    PYTHONPATH=. python benchmarks/bench_prepare.py [--source ../shared/data/ham10000] [--workers N]

Cases: original bytes kept (no resize) without and with duplicate detection (which decodes every image in full
and fingerprints it; on by default), and two resizes (each image decoded once, resized and re-encoded, in
parallel threads). Each case writes into a temporary folder that is removed afterwards. The reference point is
the naive conversion (decode every JPEG, hand PIL images to `datasets`, which re-encodes them as PNG): 73 s and
335 MB for the 39 MB source, measured on the same 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from skinsynth.prepare import PrepareConfig, prepare

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "original bytes, --no-dedup": {"dedup": False},
    "original bytes (duplicate detection on)": {},
    "--resize 224x224": {"resize": (224, 224)},
    "--max-size 100": {"max_size": 100},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "ham10000", help="HAM10000 folder (images/ + metadata.csv)")
    parser.add_argument("--workers", type=int, default=None, help="threads (default: one per core)")
    args = parser.parse_args()

    source_bytes = sum(p.stat().st_size for p in (args.source / "images").glob("*.jpg"))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), Python {platform.python_version()}")
    print(f"source: {args.source} ({source_bytes / 1e6:.1f} MB)\n")
    print(f"load average before: {os.getloadavg()[0]:.1f}  (the machine may be shared: CPU seconds are the steadier figure)\n")
    print("| case | images | seconds | CPU seconds | images/s | output MB | output / source |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    dups = []
    for name, options in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            started, cpu_started = time.perf_counter(), time.process_time()
            manifest = prepare(args.source, "ham10000", Path(tmp) / "out", config=PrepareConfig(workers=args.workers, **options), progress=False)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        rows = sum(s["num_rows"] for s in manifest["splits"].values())
        size = sum(s["num_bytes"] for s in manifest["splits"].values())
        found = manifest["duplicates"]
        if found:
            dups.append(found)
        print(f"| {name} | {rows} | {seconds:.1f} | {cpu:.1f} | {rows / seconds:.0f} | {size / 1e6:.1f} | {size / source_bytes:.2f}x |")

    if dups:
        found = dups[0]
        print(f"\nduplicates in HAM10000: {found['clusters']} sets, {found['images']} images ({found['exact_copies']} exact and "
              f"{found['near_copies']} near copies beyond the first of each set; {found['across_groups']} sets span two lesion_ids; "
              f"{found['conflicting']['clusters']} sets with different labels)")


if __name__ == "__main__":
    main()
