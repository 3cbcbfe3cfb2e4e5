"""External test sets (`--test-dataset`): other real datasets whose test splits every arm is also tested on.

They measure cross-dataset generalisation. Their labels are matched to the real dataset's by name (or
`--label-map`); their images count as held out in the leak check, and their keys are part of every run's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import label_names, open_dataset
from ..errors import DatasetError, SkinsynthError
from .arms import match_labels
from .conditions import short_name


@dataclass(frozen=True)
class ExternalTest:
    """Another real dataset's test split, its rows whose labels match the training classes, in their label ids."""

    name: str
    source: str
    split: object
    rows: np.ndarray
    labels: np.ndarray
    dropped: int  # test images of classes the mapping drops


def open_external(sources: list[str], class_names: list[str], mapping: dict, real: str) -> list[ExternalTest]:
    """Each `--test-dataset`'s test split with labels matched to the real dataset's by name (or `--label-map`);
    its classes the benchmark does not train on must be dropped explicitly (`null` in the label map)."""
    tests = []
    for source in sources:
        if Path(source).expanduser().resolve() == Path(real).expanduser().resolve():
            raise DatasetError(f"`--test-dataset {source}` is the real dataset itself; its test split is already used")
        data = open_dataset(source, required_splits=("test",))
        to_real = match_labels(class_names, label_names(data), mapping, synthetic_source=source, cover_real=False)
        labels = to_real[np.asarray(data["test"]["label"])]
        rows = np.flatnonzero(labels >= 0)
        if not len(rows):
            raise DatasetError(f"`--test-dataset {source}` has no test image of the classes trained on ({', '.join(class_names)})")
        tests.append(ExternalTest(short_name(source), source, data["test"], rows, labels[rows], int((labels < 0).sum())))
    names = [t.name for t in tests]
    if len(set(names)) != len(names):
        raise SkinsynthError(f"two --test-dataset folders have the same name ({', '.join(sources)}); rename one so results can tell them apart")
    return tests
