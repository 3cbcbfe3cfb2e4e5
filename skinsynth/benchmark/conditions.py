"""What each (arm, seed) run trains on: the arms bound to the synthetic datasets, their sampled rows, the leak check.

A condition is one row of the results table: an arm, and for an arm with synthetic images, one of the synthetic
datasets. Every condition's rows are sampled for every seed before anything trains, so that the leak check (no
training image byte-identical to a real validation or test image, or to an external test image) covers them all.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import label_names, open_dataset, stored_images
from ..errors import DatasetError, SkinsynthError
from .arms import Arm, ArmSample, match_labels, sample_arm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Condition:
    """An arm bound to one synthetic dataset (or none): what one row of the results table is."""

    name: str
    arm: Arm
    synthetic: int | None  # index into the synthetic datasets


def short_name(source: str) -> str:
    return Path(source.rstrip("/")).name or source


def conditions(arms: list[Arm], synthetic: list[str]) -> list[Condition]:
    """Real-only arms run once; an arm with synthetic images runs once per synthetic dataset (`name@dataset`).

    Without synthetic datasets the arms that need them are left out (the real baselines, reused later by a run
    into the same folder that adds `--synthetic`); if that leaves none, it is an error.
    """
    result = []
    skipped = [arm.name for arm in arms if arm.uses_synthetic and not synthetic]
    if skipped and len(skipped) == len(arms):
        raise DatasetError(f"every arm ({', '.join(skipped)}) needs synthetic images: pass --synthetic DATASET")
    if skipped:
        logger.warning("no --synthetic dataset: running only the real-only arms (leaving out %s)", ", ".join(skipped))
    for arm in arms:
        if arm.uses_synthetic and not synthetic:
            continue
        if not arm.uses_synthetic:
            result.append(Condition(arm.name, arm, None))
            continue
        for index, source in enumerate(synthetic):
            name = arm.name if len(synthetic) == 1 else f"{arm.name}@{short_name(source)}"
            result.append(Condition(name, arm, index))
    names = [c.name for c in result]
    if len(set(names)) != len(names):
        raise SkinsynthError(f"two synthetic datasets have the same folder name ({', '.join(synthetic)}); rename one so results can tell them apart")
    return result


def image_digests(split) -> np.ndarray:
    """SHA-1 of every stored image's bytes in a split, read straight from Arrow (no decoding); "" for an image
    stored as a path only."""
    return np.array([hashlib.sha1(b).hexdigest() if isinstance(b, bytes) else "" for b in stored_images(split)], dtype=object)


def check_no_leak(name: str, sample: ArmSample, real_train: np.ndarray, synthetic_train: np.ndarray | None, held_out: set[str]) -> None:
    """Raise if any training image of a condition is byte-identical to a real validation or test image."""
    used = list(real_train[sample.real_rows]) + (list(synthetic_train[sample.synthetic_rows]) if synthetic_train is not None else [])
    leaked = len({d for d in used if d} & held_out)
    if leaked:
        raise DatasetError(
            f"arm `{name}`: {leaked} training images are byte-identical to real validation/test images; "
            "the real dataset's splits overlap (split it by lesion or patient) or the synthetic dataset copies held-out images"
        )



def open_synthetic(synthetic: list[str], class_names: list[str], mapping: dict) -> tuple[list, list[np.ndarray]]:
    """Each synthetic dataset's train split, and its rows' labels as real label ids (-1: dropped by the mapping)."""
    splits, labels = [], []
    for source in synthetic:
        data = open_dataset(source, required_splits=("train",))
        to_real = match_labels(class_names, label_names(data), mapping, synthetic_source=source)
        splits.append(data["train"])
        labels.append(to_real[np.asarray(data["train"]["label"])])
    return splits, labels


def sample_all(runs: list[Condition], class_names, real: str, real_labels, synthetic: list[str], synthetic_labels, seeds: int, allow_fewer: bool) -> dict:
    def sample(condition: Condition, seed: int) -> ArmSample:
        index = condition.synthetic
        return sample_arm(condition.arm, class_names, real_labels, None if index is None else synthetic_labels[index], seed, allow_fewer,
                          real_source=f"the train split of `{real}`",
                          synthetic_source="the synthetic train split" if index is None else f"the train split of `{synthetic[index]}`")

    return {(c.name, seed): sample(c, seed) for c in runs for seed in range(seeds)}


def check_leaks(real_data, synthetic_splits: list, runs: list[Condition], samples: dict, external_splits: list = ()) -> None:
    held_out = set(image_digests(real_data["validation"])) | set(image_digests(real_data["test"]))
    for split in external_splits:
        held_out |= set(image_digests(split))
    held_out -= {""}
    real_digests = image_digests(real_data["train"])
    synthetic_digests = [image_digests(split) for split in synthetic_splits]
    by_name = {c.name: c for c in runs}
    for (name, _), sample in samples.items():
        index = by_name[name].synthetic
        check_no_leak(name, sample, real_digests, None if index is None else synthetic_digests[index], held_out)
