"""How long `skinsynth prepare` takes on all of HAM10000, and how big the result is compared to the source; and how
much faster duplicate fingerprints are from a reduced JPEG decode than from a full one, on large JPEGs.

    PYTHONPATH=. python benchmarks/bench_prepare.py [--source ../shared/data/ham10000] [--workers N] [--large 300]

Cases: original bytes kept (no resize) without and with duplicate detection (which decodes every image at 256
pixels a side or more and fingerprints it; on by default), and two resizes (each image decoded once, resized and
re-encoded, in parallel threads). Each case writes into a temporary folder that is removed afterwards. The
reference point is the naive conversion (decode every JPEG, hand PIL images to `datasets`, which re-encodes them
as PNG): 73 s and 335 MB for the 39 MB source, measured on the same 2-core machine.

Large JPEGs: the HAM10000 copy here is 200x150 pixels, where a reduced decode changes nothing, so `--large N`
upscales N of its images to 1600x1200 JPEGs (quality 90; a tenth of them also resized by 10 % and a tenth
re-encoded at quality 50, as near copies) and fingerprints them in one thread as `prepare`'s check pass does
(`check_image`) and with a full decode (what it did before), best of `--repeats`; the duplicate pairs found
must be the same.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from skinsynth import duplicates as dup
from skinsynth.prepare import PrepareConfig, check_image, prepare, to_rgb
from skinsynth.sources import Example

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
    parser.add_argument("--large", type=int, default=300, help="HAM10000 images to upscale to 1600x1200 for the fingerprint comparison (0: skip it)")
    parser.add_argument("--repeats", type=int, default=2, help="fingerprint each large folder this many times, each way, interleaved; report the best")
    parser.add_argument("--only-large", action="store_true", help="skip the HAM10000 conversions")
    args = parser.parse_args()

    source_bytes = sum(p.stat().st_size for p in (args.source / "images").glob("*.jpg"))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), Python {platform.python_version()}")
    print(f"source: {args.source} ({source_bytes / 1e6:.1f} MB)\n")
    print(f"load average before: {os.getloadavg()[0]:.1f}  (the machine may be shared: CPU seconds are the steadier figure)\n")
    if args.large:
        large_jpegs(args.source, args.large, args.repeats)
    if args.only_large:
        return
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


def full_decode_fingerprint(example: Example) -> dup.Fingerprint:
    """The fingerprint as `prepare` made it before: every image decoded in full."""
    from PIL import Image, ImageOps

    with Image.open(example.path) as image:
        image.load()
        return dup.fingerprint(to_rgb(ImageOps.exif_transpose(image)))


def large_jpegs(source: Path, n: int, repeats: int) -> None:
    from PIL import Image

    config = PrepareConfig(workers=1)
    ways = {"full decode (before)": full_decode_fingerprint, "reduced decode (`check_image`)": lambda e: check_image(e, config).fingerprint}
    with tempfile.TemporaryDirectory() as tmp:
        examples = []
        for i, path in enumerate(sorted((source / "images").glob("*.jpg"))[:n]):
            big = Image.open(path).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC)
            copies = {path.name: (big, 90)}
            if i % 10 == 1:
                copies[f"{path.stem}_resized.jpg"] = (big.resize((1440, 1080), Image.Resampling.LANCZOS), 90)
            if i % 10 == 2:
                copies[f"{path.stem}_q50.jpg"] = (big, 50)
            for name, (image, quality) in copies.items():
                image.save(Path(tmp) / name, quality=quality)
                examples.append(Example(path=Path(tmp) / name, label="x", group_id=name))
        megabytes = sum(e.path.stat().st_size for e in examples) / 1e6
        best: dict[str, tuple[float, float]] = {}
        pairs = {}
        for _ in range(repeats):
            for name, way in ways.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                prints = [way(e) for e in examples]
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                best[name] = min(best.get(name, (seconds, cpu)), (seconds, cpu))
                pairs[name] = dup.duplicate_pairs(prints)
    print(f"duplicate fingerprints of {len(examples)} JPEGs of 1600x1200 ({megabytes:.0f} MB; {n} HAM10000 images upscaled, with near copies), one thread, best of {repeats}:\n")
    print("| fingerprint from | seconds | CPU seconds | images/s | pairs found |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (seconds, cpu) in best.items():
        print(f"| {name} | {seconds:.1f} | {cpu:.1f} | {len(examples) / seconds:.0f} | {len(pairs[name])} |")
    (full_s, full_cpu), (reduced_s, reduced_cpu) = best.values()
    same = len(set(map(tuple, pairs.values()))) == 1
    print(f"\nreduced decode: {full_s / reduced_s:.1f}x faster ({full_cpu / reduced_cpu:.1f}x fewer CPU seconds); "
          f"same duplicate pairs as the full decode: {'yes' if same else 'NO'}\n")


if __name__ == "__main__":
    main()
