"""Does the memorization audit flag copies and leave new patients alone, on real HAM10000?

    PYTHONPATH=. python benchmarks/bench_audit.py [--ham10000 DIR] [--work DIR] [--non-copies 100] [--copies 20]
        [--strength light|heavy] [--features keypoints|contrastive|…] [--contrastive-steps N]

A synthetic set made of `--non-copies` real *test* images (lesions the training split never holds: they copy no
one) and `--copies` real *training* images altered by `skinsynth.audit.copies.plant_copy` (`light`: 5 % crop, flip
or 90° rotation, +15 % saturation, JPEG 70; `heavy`: 10-30 % crop, flip, any rotation, colour jitter, JPEG 40-75)
is audited with `audit memorization` (default: its default `--features keypoints`), against the whole prepared
HAM10000 train split. Prints how many of each were flagged, beside the audit's own measured false-positive rate,
planted-copy recall and the held-out real images it flags (HAM10000 holds some lesions under two ids).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import datasets
import numpy as np

from skinsynth import prepare
from skinsynth.audit.copies import plant_copy
from skinsynth.audit.features import ContrastiveConfig
from skinsynth.audit.memorization import audit_memorization
from skinsynth.data import open_dataset
from skinsynth.shards import atomic_write_json, splits_manifest, write_split


def jpeg_row(image, label: int, name: str) -> dict:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return {"image": {"bytes": buffer.getvalue(), "path": name}, "label": label}


def synthetic_set(real, out: Path, non_copies: int, copies: int, strength: str, seed: int) -> np.ndarray:
    """Write the synthetic set; returns the training rows its copies come from (rows non_copies.. are copies)."""
    rng = np.random.default_rng(seed)
    test_rows = np.sort(rng.choice(len(real["test"]), non_copies, replace=False))
    train_rows = np.sort(rng.choice(len(real["train"]), copies, replace=False))
    rows = [jpeg_row(row["image"], row["label"], f"test-{r}.jpg") for r, row in ((r, real["test"][int(r)]) for r in test_rows)]
    for r in train_rows:
        row = real["train"][int(r)]
        rows.append(jpeg_row(plant_copy(row["image"], rng, strength), row["label"], f"copy-{r}.jpg"))
    features = datasets.Features({"image": datasets.Image(), "label": real["train"].features["label"]})
    infos = {"train": write_split(out, "train", rows, features, shard_size=1000)}
    atomic_write_json(out / "prepare.json", {"kind": "synthetic", "splits": splits_manifest(infos)})
    return train_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ham10000", default="../shared/data/ham10000")
    parser.add_argument("--work", default="./bench-output/audit")
    parser.add_argument("--non-copies", type=int, default=100)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--strength", default="light", choices=["light", "heavy"])
    parser.add_argument("--features", default="keypoints")
    parser.add_argument("--contrastive-steps", type=int, default=ContrastiveConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work)
    if not (work / "ham10000" / "prepare.json").is_file():
        prepare(args.ham10000, "ham10000", work / "ham10000", progress=False)
    real = open_dataset(work / "ham10000")
    syn = work / f"syn-{args.strength}-{args.non_copies}-{args.copies}-{args.seed}"
    if not (syn / "prepare.json").is_file():
        synthetic_set(real, syn, args.non_copies, args.copies, args.strength, args.seed)
    started = time.perf_counter()
    report = audit_memorization(syn, work / "ham10000", work / (f"audit-{args.features}" + (f"-{args.contrastive_steps}" if args.features == "contrastive" else "")), features=args.features,
                                contrastive=ContrastiveConfig(steps=args.contrastive_steps))
    seconds = time.perf_counter() - started
    flagged = {f["row"] for f in report["flagged"]}
    false_flags = sum(r < args.non_copies for r in flagged)
    hits = sum(r >= args.non_copies for r in flagged)
    print(json.dumps({key: report.get(key) for key in ("features", "threshold", "threshold_method", "false_positive_rate", "planted_copy_recall", "excess", "heldout_flagged")}, indent=1))
    print(f"{args.strength} copies: flagged {false_flags} of {args.non_copies} non-copies (new patients) and {hits} of {args.copies} copies "
          f"({seconds:.0f} s, {args.features} features" + (f", {args.contrastive_steps} encoder steps)" if args.features == "contrastive" else ")"))


if __name__ == "__main__":
    main()
