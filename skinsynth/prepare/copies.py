"""Duplicates among a real dataset's images: group the copies `skinsynth.duplicates` finds, settle conflicting
labels, and report copies across the splits the source fixed (`duplicates.json`)."""

from __future__ import annotations

import io
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from .. import duplicates as dup
from ..shards import DUPLICATES_REPORT
from ..sources import Example
from .config import PrepareConfig
from .images import Check, to_rgb

logger = logging.getLogger(__name__)


def _file_name(path: Path, root: Path) -> str:
    path = path.absolute()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def pixel_digest(example: Example) -> str:
    """SHA-256 of the example's upright RGB pixels decoded at full size: the same for exact copies in any format
    (the check pass fingerprints JPEGs at reduced size, where a JPEG and a PNG of the same pixels differ slightly)."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(example.data())) as image:
        return dup.fingerprint(to_rgb(ImageOps.exif_transpose(image))).pixels


def resolve_duplicates(usable: list[tuple[Example, Check]], config: PrepareConfig, root: Path, pool: ThreadPoolExecutor) -> tuple[list[tuple[Example, Check]], dict, list[dict], Counter]:
    """Find the duplicate clusters among the usable images and apply the config's policies. Returns the images kept
    (copies now share one `group_id`), the counts for the manifest, one report entry per cluster (file names
    relative to `root`) and the images dropped, by reason. Which copies are exact is decided on full-size pixels,
    decoded again (in `pool`) for the images in clusters only."""
    examples = [e for e, _ in usable]
    found = dup.clusters(len(usable), dup.duplicate_pairs([c.fingerprint for _, c in usable]))
    in_any = [i for members in found for i in members]
    digests = dict(zip(in_any, pool.map(lambda i: pixel_digest(examples[i]), in_any)))
    preset = any(e.split is not None for e in examples)
    keep = [True] * len(usable)
    dropped: Counter = Counter()
    counts: Counter = Counter()
    entries = []
    for members in found:
        labels = [examples[i].label for i in members]
        entry = {"kind": "exact" if len({digests[i] for i in members}) == 1 else "near",
                 "files": [_file_name(examples[i].path, root) for i in members], "labels": labels,
                 "groups": [examples[i].group_id for i in members]}
        counts["across_groups"] += len(set(entry["groups"])) > 1
        if len(set(labels)) > 1:
            counts["conflicting_clusters"] += 1
            counts["conflicting_images"] += len(members)
            for i, kept in zip(members, dup.conflict_keep(labels, config.conflicts)):
                if not kept:
                    keep[i] = False
                    dropped["conflicting_label"] += 1
        if preset:
            entry["splits"] = [examples[i].split or "train" for i in members]
            sides = {split for i, split in zip(members, entry["splits"]) if keep[i]}
            if len(sides) > 1:
                counts["cross_split_clusters"] += 1
                counts["cross_split_images"] += len(members)
                if config.cross_split == "drop-train":
                    for i, split in zip(members, entry["splits"]):
                        if keep[i] and split == "train":
                            keep[i] = False
                            dropped["duplicate_across_splits"] += 1
        entry["dropped"] = [name for i, name in zip(members, entry["files"]) if not keep[i]]
        entries.append(entry)

    exact = Counter(digests.values())  # exact copies always share a cluster: their fingerprints match
    in_clusters = len(in_any)
    summary = {
        "method": {"exact": "SHA-256 of the decoded RGB pixels",
                   "near": f"64-bit DCT pHash within {dup.PHASH_DISTANCE} bits and 32x32 grey thumbnails within {dup.THUMBNAIL_DIFFERENCE} grey levels"},
        "clusters": len(found),
        "images": in_clusters,
        "exact_copies": sum(n - 1 for n in exact.values()),
        "near_copies": in_clusters - len(found) - sum(n - 1 for n in exact.values()),
        "across_groups": counts["across_groups"],
        "conflicting": {"clusters": counts["conflicting_clusters"], "images": counts["conflicting_images"], "policy": config.conflicts,
                        "dropped": dropped["conflicting_label"]},
        "cross_split": {"clusters": counts["cross_split_clusters"], "images": counts["cross_split_images"], "policy": config.cross_split,
                        "removed_from_train": dropped["duplicate_across_splits"]},
        "report": DUPLICATES_REPORT,
    }
    if summary["conflicting"]["clusters"]:
        logger.warning("%d images are copies of one another with different labels (%d sets); --conflicts %s dropped %d of them",
                       summary["conflicting"]["images"], summary["conflicting"]["clusters"], config.conflicts, summary["conflicting"]["dropped"])
    if summary["cross_split"]["clusters"]:
        logger.warning("WARNING: %d sets of copies (%d images) sit in more than one of the splits the source fixed%s; see %s",
                       summary["cross_split"]["clusters"], summary["cross_split"]["images"],
                       f": {dropped['duplicate_across_splits']} removed from train" if config.cross_split == "drop-train"
                       else ": evaluation on them measures memory (`--cross-split drop-train` removes the train side)", DUPLICATES_REPORT)
    mapping = dup.merged_groups([e.group_id for e in examples], [[i for i in m if keep[i]] for m in found])
    kept = [(replace(e, group_id=mapping.get(e.group_id, e.group_id)), c) for (e, c), k in zip(usable, keep) if k]
    return kept, summary, entries, dropped
