"""Leak-free splits of a real dataset: stratified by label, grouped so that no lesion or patient is in two splits.

Several images often show the same lesion (HAM10000: 10,015 images of 7,470 lesions); a split that separates
them puts near-copies of test images in training and inflates every score measured on it. So whole groups are
assigned, never single images. These are pure functions of (labels, groups, fractions, seed): no files, no
global random state, the same answer on every machine.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from .errors import SkinsynthError

SPLITS = ("train", "validation", "test")


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Fractions per split, each in [0, 1] and summing to 1 (within rounding), or a `SkinsynthError`."""
    for split, value in fractions.items():
        if not 0 <= value <= 1:
            raise SkinsynthError(f"the `{split}` fraction must be between 0 and 1, got {value}")
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise SkinsynthError(f"split fractions must sum to 1, got {dict(fractions)}")
    return dict(fractions)


def _strata(labels: Sequence[str], groups: Sequence[str]) -> dict[str, dict[str, list[int]]]:
    """{stratum label: {group: member indices}}; a group's stratum is its most common label (ties: first by name)."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    strata: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for group, indices in members.items():
        counts = Counter(labels[i] for i in indices)
        stratum = min(counts, key=lambda label: (-counts[label], label))
        strata[stratum][group] = indices
    return strata


def _shuffled_groups(groups: dict[str, list[int]], seed: int, stratum: str) -> list[str]:
    """The stratum's groups in a seeded random order, then largest first (stable), so big groups are placed while
    every split still has room and small ones fill the remainder."""
    order = sorted(groups)
    random.Random(f"{seed}:{stratum}").shuffle(order)
    return sorted(order, key=lambda group: -len(groups[group]))


def assign_splits(labels: Sequence[str], groups: Sequence[str], fractions: Mapping[str, float], seed: int = 0) -> list[str]:
    """The split of every item: all items of a group get the same split, and each label's items are shared among
    the splits as close to `fractions` as whole groups allow.

    Within each label, groups go one by one (seeded order) to the split furthest below its target count; ties go
    to the split listed first. A label with too few items for every split fills the first splits first.
    """
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    fractions = check_fractions(fractions)
    splits = list(fractions)
    assigned: list[str | None] = [None] * len(labels)
    for stratum, stratum_groups in sorted(_strata(labels, groups).items()):
        size = sum(len(indices) for indices in stratum_groups.values())
        filled = dict.fromkeys(splits, 0)
        for group in _shuffled_groups(stratum_groups, seed, stratum):
            split = max(splits, key=lambda s: (size * fractions[s] - filled[s], -splits.index(s)))
            filled[split] += len(stratum_groups[group])
            for index in stratum_groups[group]:
                assigned[index] = split
    return assigned


def cap_per_class(labels: Sequence[str], groups: Sequence[str], per_class: int, seed: int = 0) -> list[int]:
    """Indices of the items kept when each label is capped at `per_class` items, choosing whole groups in a seeded
    order (a group that would overshoot the cap is passed over for smaller ones), in their original order."""
    if per_class < 1:
        raise SkinsynthError(f"`--per-class-cap` must be at least 1, got {per_class}")
    kept: list[int] = []
    for stratum, stratum_groups in sorted(_strata(labels, groups).items()):
        order = sorted(stratum_groups)
        random.Random(f"{seed}:cap:{stratum}").shuffle(order)
        count = 0
        for group in order:
            if count + len(stratum_groups[group]) <= per_class:
                kept.extend(stratum_groups[group])
                count += len(stratum_groups[group])
    return sorted(kept)
