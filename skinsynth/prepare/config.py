"""How `prepare` converts a dataset: split fractions, resizing, caps, duplicate policies (`PrepareConfig`), checked
once when made, so a bad option fails before any image is read."""

from __future__ import annotations

from dataclasses import dataclass

from .. import duplicates as dup
from ..errors import SkinsynthError


@dataclass(frozen=True)
class PrepareConfig:
    """How to convert: split fractions and seed, an optional resize and per-class cap, and the shard size.

    `validation` and `test` are fractions of the whole dataset (train gets the rest). When the source fixes some
    splits itself (ImageFolder train/test folders), those are kept and the missing ones are carved out of train.
    `resize` is an exact (width, height); `max_size` bounds the longer side and keeps the aspect ratio.
    `dedup` finds exact and near copies (see `skinsynth.duplicates`); `conflicts` says what becomes of copies with
    different labels (`drop`: all of them, the default, since the source contradicts itself; `majority`: keep those
    with the strictly most common label; `keep`: keep all, only count them); `cross_split` what becomes of copies
    on both sides of a split the source fixed (`report`, the default, or `drop-train`: remove the train side).
    `classes` must each end up with images (else an error); without them, a class the source names but has no
    image of is left out of the dataset and reported as absent.
    """

    validation: float = 0.1
    test: float = 0.1
    seed: int = 0
    resize: tuple[int, int] | None = None
    max_size: int | None = None
    per_class_cap: int | None = None
    shard_size: int = 1000
    quality: int = 95
    workers: int | None = None
    dedup: bool = True
    conflicts: str = "drop"
    cross_split: str = "report"
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.conflicts not in dup.CONFLICT_POLICIES:
            raise SkinsynthError(f"`--conflicts` must be one of {', '.join(dup.CONFLICT_POLICIES)}, got {self.conflicts!r}")
        if self.cross_split not in dup.CROSS_SPLIT_POLICIES:
            raise SkinsynthError(f"`--cross-split` must be one of {', '.join(dup.CROSS_SPLIT_POLICIES)}, got {self.cross_split!r}")
        for name in ("validation", "test"):
            if not 0 <= getattr(self, name) < 1:
                raise SkinsynthError(f"`--{name}` must be a fraction in [0, 1), got {getattr(self, name)}")
        if self.validation + self.test >= 1:
            raise SkinsynthError(f"`--validation` + `--test` must leave something for train, got {self.validation} + {self.test}")
        if self.resize is not None and self.max_size is not None:
            raise SkinsynthError("give `--resize` or `--max-size`, not both")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            raise SkinsynthError(f"`--resize` must be WIDTHxHEIGHT with positive sides, got {self.resize}")
        for name, low in (("max_size", 1), ("per_class_cap", 1), ("shard_size", 1), ("quality", 1), ("workers", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise SkinsynthError(f"`--{name.replace('_', '-')}` must be at least {low}, got {value}")
        if self.quality > 100:
            raise SkinsynthError(f"`--quality` must be at most 100, got {self.quality}")

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": 1 - self.validation - self.test, "validation": self.validation, "test": self.test}

    def target_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The output size of an image of `size`, or None when it stays as it is."""
        if self.resize is not None:
            return None if tuple(self.resize) == size else tuple(self.resize)
        if self.max_size is not None and max(size) > self.max_size:
            scale = self.max_size / max(size)
            return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
        return None


def parse_size(text: str) -> tuple[int, int]:
    """`512x384` -> (512, 384); `512` -> (512, 512)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise SkinsynthError(f"`--resize` must look like 512x384 (width x height) or 512, got {text!r}")
    return parts[0], parts[1]
