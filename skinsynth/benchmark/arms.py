"""Arms of a benchmark: which real and synthetic training images each classifier sees.

An arm is a training set: so many real images per class (or a fraction of each class) plus so many synthetic
images per class (or a multiple of the real count). Validation and test are always the real dataset's own splits.
Presets reproduce the paper's table (`akrout2023`) and a synthetic-to-real ratio sweep (`ratio-sweep`);
`--scale` multiplies every count so a preset also runs small. A real-only arm with `real_seeds: N` trains on the
union of the real images its first N seeds draw: what an ensemble of N seed runs (a filter) saw together, so a
filtered synthetic arm can be set beside the real data its filter stands for.

Sampling is a pure function of the class's row indices and the seed: each class of each source is shuffled once
per seed and an arm takes the first n of that order, so the 250-image arm is a subset of the 500-image arm and
the hybrid's real images are the real-small arm's, as in a nested experiment.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import DatasetError, RecipeError
from ..recipe import load_yaml


class Arm(BaseModel):
    """One training set. Give at most one of each pair; an arm with neither real field has no real images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    real_per_class: int | None = Field(default=None, ge=0, description="real training images per class")
    real_fraction: float | None = Field(default=None, gt=0, le=1, description="share of each class's real training images")
    synthetic_per_class: int | None = Field(default=None, ge=0, description="synthetic training images per class")
    synthetic_ratio: float | None = Field(default=None, ge=0, description="synthetic images per class as a multiple of the real count")
    real_seeds: int | None = Field(default=None, ge=1, description="train on the union of the real images seeds 0..N-1 draw (the images an ensemble of N seed runs saw)")

    @model_validator(mode="after")
    def _one_of_each(self) -> Arm:
        if self.real_per_class is not None and self.real_fraction is not None:
            raise ValueError(f"arm `{self.name}`: give `real_per_class` or `real_fraction`, not both")
        if self.synthetic_per_class is not None and self.synthetic_ratio is not None:
            raise ValueError(f"arm `{self.name}`: give `synthetic_per_class` or `synthetic_ratio`, not both")
        if not (self.real_per_class or self.real_fraction or self.synthetic_per_class or self.synthetic_ratio):
            raise ValueError(f"arm `{self.name}` has no training images: set a real and/or a synthetic count")
        if self.synthetic_ratio and not (self.real_per_class or self.real_fraction):
            raise ValueError(f"arm `{self.name}`: `synthetic_ratio` multiplies the real count, so it needs `real_per_class` or `real_fraction`")
        if self.real_seeds and (self.uses_synthetic or not self.uses_real):
            raise ValueError(f"arm `{self.name}`: `real_seeds` pools the real images of several seeds; it applies to real-only arms (with `real_per_class` or `real_fraction`)")
        return self

    @property
    def uses_synthetic(self) -> bool:
        return bool(self.synthetic_per_class or self.synthetic_ratio)

    @property
    def uses_real(self) -> bool:
        return bool(self.real_per_class or self.real_fraction)

    def scaled(self, scale: float) -> Arm:
        """The arm with every count (and the real fraction) multiplied by `scale`; a non-zero count stays at least 1."""

        def count(n: int | None) -> int | None:
            return None if n is None else (0 if n == 0 else max(1, round(n * scale)))

        fraction = None if self.real_fraction is None else min(1.0, self.real_fraction * scale)
        return self.model_copy(update={"real_per_class": count(self.real_per_class), "real_fraction": fraction, "synthetic_per_class": count(self.synthetic_per_class)})


class ArmsFile(BaseModel):
    """What an `--arms ARMS.yaml` file holds: `arms: [{name, real_per_class, …}, …]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: list[Arm] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ArmsFile:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(duplicates)}")
        return self


PRESETS: dict[str, tuple[Arm, ...]] = {
    # Akrout et al. 2023, table 2: the same classifier on 250 or 500 real, 250 real + 250 synthetic, 500 synthetic.
    "akrout2023": (
        Arm(name="real-250", real_per_class=250),
        Arm(name="real-500", real_per_class=500),
        Arm(name="hybrid-250+250", real_per_class=250, synthetic_per_class=250),
        Arm(name="synthetic-500", synthetic_per_class=500),
    ),
    # Synthetic-to-real ratios at a fixed real count: where does adding synthetic images stop helping?
    "ratio-sweep": tuple(Arm(name=f"ratio-{ratio:g}", real_per_class=250, synthetic_ratio=ratio) for ratio in (0, 0.5, 1, 2, 4, 10)),
}


def _check_scale(scale: float) -> None:
    if not (scale > 0 and math.isfinite(scale)):
        raise RecipeError(f"`--scale` must be a positive number, got {scale}")


def preset_arms(name: str, scale: float = 1.0) -> list[Arm]:
    """The arms of a preset, with counts multiplied by `scale`."""
    if name not in PRESETS:
        raise RecipeError(f"unknown preset `{name}`; choose one of {', '.join(PRESETS)} or pass --arms ARMS.yaml")
    _check_scale(scale)
    return [arm.scaled(scale) for arm in PRESETS[name]]


def parse_arms(data, scale: float = 1.0, source: str = "arms") -> list[Arm]:
    """Arms from the parsed content of an arms file; a `RecipeError` names the offending field."""
    _check_scale(scale)
    try:
        arms = ArmsFile.model_validate(data).arms
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arms'}: {e['msg']}" for e in err.errors())
        raise RecipeError(f"{source} is not a valid arms file ({problems}). Example: `arms: [{{name: real-250, real_per_class: 250}}]`") from None
    return [arm.scaled(scale) for arm in arms]


def load_arms(path: str | Path, scale: float = 1.0) -> list[Arm]:
    return parse_arms(load_yaml(path, "arms"), scale, source=str(path))


# ---- labels -----------------------------------------------------------------------------------------------------


def label_key(name: str) -> str:
    """A class name as labels are matched: case and `_`/`-`/space differences ignored."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def match_labels(real_names: list[str], synthetic_names: list[str], mapping: dict[str, str | None] | None = None, synthetic_source: str = "synthetic",
                 cover_real: bool = True) -> np.ndarray:
    """For each synthetic label id, the real label id it stands for (-1: dropped by the mapping).

    Names match ignoring case and `_`/`-`/space differences; `mapping` renames synthetic names first (a `null`
    value drops a class). With `cover_real`, every real class must be covered, so that a synthetic-only arm can
    learn every class; an external test set (`cover_real=False`) may lack some.
    """
    mapping = {label_key(k): v for k, v in (mapping or {}).items()}
    real_index = {label_key(name): i for i, name in enumerate(real_names)}
    result = np.full(len(synthetic_names), -1, dtype=np.int64)
    unknown = []
    for i, name in enumerate(synthetic_names):
        key = label_key(name)
        if key in mapping:
            if mapping[key] is None:
                continue
            key = label_key(mapping[key])
        if key in real_index:
            result[i] = real_index[key]
        else:
            unknown.append(name)
    missing = [name for i, name in enumerate(real_names) if i not in set(result.tolist())] if cover_real else []
    if unknown or missing:
        common = len(real_names) - len(missing)
        raise DatasetError(
            f"labels of `{synthetic_source}` do not match the real dataset's ({common} in common). "
            f"Real: {', '.join(real_names)}. Synthetic: {', '.join(synthetic_names)}. "
            + (f"Unmatched synthetic: {', '.join(unknown)}. " if unknown else "")
            + (f"Real classes with no synthetic images: {', '.join(missing)}. " if missing else "")
            + "Pass --label-map FILE (YAML `synthetic name: real name`, `null` to drop a class)."
        )
    return result


def load_label_map(path: str | Path | None) -> dict[str, str | None]:
    if path is None:
        return {}
    data = load_yaml(path, "label map")
    if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()):
        raise RecipeError(f"label map {path} must be a mapping `synthetic name: real name` (or `null` to drop a class)")
    return data


# ---- sampling ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSample:
    """Row indices into the real and synthetic train splits, and the real label id of each chosen row."""

    real_rows: np.ndarray
    real_labels: np.ndarray
    synthetic_rows: np.ndarray
    synthetic_labels: np.ndarray
    real_per_class: dict[str, int]
    synthetic_per_class: dict[str, int]

    def __len__(self) -> int:
        return len(self.real_rows) + len(self.synthetic_rows)


def _class_order(rows: np.ndarray, seed: int, source: str, class_name: str) -> np.ndarray:
    """A seeded shuffle of one class's rows; independent of every other class, source and arm."""
    key = hashlib.sha256(f"{seed}\0{source}\0{class_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:8], "little")).permutation(rows)


def _take(labels: np.ndarray, counts: list[int], class_names: list[str], seed: int, source: str, split_name: str, arm: str, allow_fewer: bool) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    rows, row_labels, taken = [], [], {}
    for class_id, (name, wanted) in enumerate(zip(class_names, counts)):
        available = np.flatnonzero(labels == class_id)
        if wanted > len(available) and not allow_fewer:
            raise DatasetError(
                f"arm `{arm}` asks for {wanted} {source} images of `{name}` but {split_name} holds {len(available)}; "
                "lower the count, pass a smaller --scale, or pass --allow-fewer to take what there is"
            )
        chosen = _class_order(available, seed, source, name)[:wanted]
        rows.append(chosen)
        row_labels.append(np.full(len(chosen), class_id, dtype=np.int64))
        taken[name] = len(chosen)
    return np.concatenate(rows).astype(np.int64), np.concatenate(row_labels), taken


def sample_arm(
    arm: Arm,
    class_names: list[str],
    real_labels: np.ndarray,
    synthetic_labels: np.ndarray | None,
    seed: int,
    allow_fewer: bool = False,
    real_source: str = "real train split",
    synthetic_source: str = "synthetic train split",
) -> ArmSample:
    """Choose an arm's rows. `real_labels` / `synthetic_labels` are the label ids (in real-label space, -1 for
    dropped classes) of every row of the real / synthetic train splits."""
    real_labels = np.asarray(real_labels)
    num_real = np.bincount(real_labels[real_labels >= 0], minlength=len(class_names))
    if arm.real_fraction is not None:
        real_counts = [max(1, math.floor(arm.real_fraction * n)) if n else 0 for n in num_real]
    else:
        real_counts = [arm.real_per_class or 0] * len(class_names)
    if arm.real_seeds:
        # The same rows for every run seed: the union of what seeds 0..N-1 of the arm without `real_seeds` take.
        drawn = [_take(real_labels, real_counts, class_names, s, "real", real_source, arm.name, allow_fewer)[0] for s in range(arm.real_seeds)]
        real_rows = np.unique(np.concatenate(drawn))
        real_row_labels = real_labels[real_rows].astype(np.int64)
        real_taken = {name: int((real_row_labels == k).sum()) for k, name in enumerate(class_names)}
    else:
        real_rows, real_row_labels, real_taken = _take(real_labels, real_counts, class_names, seed, "real", real_source, arm.name, allow_fewer)

    if arm.synthetic_ratio is not None:
        synthetic_counts = [round(arm.synthetic_ratio * real_taken[name]) for name in class_names]
    else:
        synthetic_counts = [arm.synthetic_per_class or 0] * len(class_names)
    if any(synthetic_counts):
        if synthetic_labels is None:
            raise DatasetError(f"arm `{arm.name}` needs synthetic images: pass --synthetic DATASET, or choose arms without synthetic images")
        syn_rows, syn_row_labels, syn_taken = _take(np.asarray(synthetic_labels), synthetic_counts, class_names, seed, "synthetic", synthetic_source, arm.name, allow_fewer)
    else:
        syn_rows, syn_row_labels, syn_taken = np.zeros(0, np.int64), np.zeros(0, np.int64), {name: 0 for name in class_names}
    return ArmSample(real_rows, real_row_labels, syn_rows, syn_row_labels, real_taken, syn_taken)
