"""Does the memorization audit flag copies and leave new patients alone, on real HAM10000?

    PYTHONPATH=. python benchmarks/bench_audit.py [--ham10000 DIR] [--work DIR] [--non-copies 100] [--copies 20]
        [--strength light|heavy] [--features keypoints|contrastive|…] [--contrastive-steps N]
    PYTHONPATH=. python benchmarks/bench_audit.py --filter-speed --real PREPARED_HAM10000 [--sizes 64 512] [--device cuda]

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
    parser.add_argument("--filter-speed", action="store_true", help="time `generate --filter-copies`'s check per image against generation instead")
    parser.add_argument("--real", default="./bench-output/ham10000-cpu-flow/ham10000", help="with --filter-speed: a prepared real dataset")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.filter_speed:
        return filter_speed(args)
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


def filter_speed(args) -> None:
    """`generate --filter-copies`'s cost per image against the cost of generating it, at each of `--sizes` px.

    The copy check's one-time work (training keypoints, calibration on the held-out split) is timed, from the cache when
    an earlier run left one; the per-image check is timed on real test images resized to each size (what a good generator draws) and on
    the tiny random pipeline's own images. Generation is the tiny pipeline's (20 steps, guidance 7.5): a lower bound on
    a real model's cost (a Stable Diffusion 1.5 UNet is about 1000 times its size), so the ratio printed is an upper
    bound on the filter's share."""
    import tempfile

    import torch

    from skinsynth.audit.copy_filter import CopyFilterConfig, build_copy_filter
    from skinsynth.audit.matching import reference_cache_dir
    from skinsynth.pipeline import load_pipeline, tiny_pipeline

    real = open_dataset(args.real)
    cached = any(reference_cache_dir().glob("*/calibration-*.json"))
    started = time.perf_counter()
    check = build_copy_filter(CopyFilterConfig(real=args.real), device=args.device, progress=False)
    print(f"copy check set-up ({'cache found' if cached else 'no cache before'} in {reference_cache_dir()}): {time.perf_counter() - started:.1f} s, "
          f"{check.summary()['num_train']} training images, threshold {check.threshold:g}")
    with tempfile.TemporaryDirectory() as folder:
        tiny_pipeline(Path(folder) / "tiny")
        pipe, _ = load_pipeline(str(Path(folder) / "tiny"), device=args.device)
    test = real["test"].select(range(args.images))
    for size in args.sizes:
        started = time.perf_counter()
        output = pipe(prompt=["a photo of a skin lesion"] * args.images, num_inference_steps=20, guidance_scale=7.5, height=size, width=size,
                      generator=[torch.Generator("cpu").manual_seed(i) for i in range(args.images)], output_type="pil")
        generation = (time.perf_counter() - started) / args.images
        for what, images in (("real test images", [image.convert("RGB").resize((size, size)) for image in test["image"]]), ("tiny-pipeline images", output.images)):
            started = time.perf_counter()
            check.matcher.nearest_images(images)
            seconds = (time.perf_counter() - started) / len(images)
            print(f"{size} px, {what}: check {seconds:.3f} s/image ({check.matcher.threads} threads), generation {generation:.3f} s/image "
                  f"(tiny pipeline, {args.device}): check / generation = {seconds / generation:.2f}")


if __name__ == "__main__":
    main()
