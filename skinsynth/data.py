"""Open a labeled image dataset in the skinsynth layout, from a local folder or a Hub id, with one clear error.

`benchmark`, `finetune` and the audits all read datasets through `open_dataset`; a dataset is usable when it has
an `image` column and a `label` column that is a `ClassLabel` (the names are what arms, captions and filters match).
"""

from __future__ import annotations

from pathlib import Path

from .errors import DatasetError


def open_dataset(source: str | Path, *, revision: str | None = None, required_splits: tuple[str, ...] = ()):
    """`datasets.load_dataset(source)` as a `DatasetDict`, checked for `image` and a `ClassLabel` `label`."""
    import datasets

    source = str(source)
    local = Path(source).expanduser()
    if not local.exists() and source.startswith((".", "/", "~")):
        raise DatasetError(f"dataset folder `{source}` does not exist")
    if local.is_dir() and not any(local.glob("data/*.arrow")) and not any(local.glob("data/*.parquet")):
        raise DatasetError(f"`{source}` holds no data/*.arrow shards: is it the output of `skinsynth generate` or `skinsynth prepare`?")
    try:
        dataset = datasets.load_dataset(str(local) if local.exists() else source, revision=revision)
    except Exception as err:  # datasets raises many types (offline, missing repo, bad files)
        raise DatasetError(f"could not load dataset `{source}`: {err}") from err
    missing = [split for split in required_splits if split not in dataset]
    if missing:
        raise DatasetError(f"dataset `{source}` has no {', '.join(missing)} split (it has: {', '.join(dataset)})")
    for split, part in dataset.items():
        if "image" not in part.features or not isinstance(part.features.get("label"), datasets.ClassLabel):
            raise DatasetError(f"dataset `{source}` ({split}) needs an `image` column and a ClassLabel `label` column; it has {part.features}")
    return dataset


def label_names(dataset) -> list[str]:
    """Class names of a dataset (or DatasetDict), in label order."""
    first = next(iter(dataset.values())) if hasattr(dataset, "values") else dataset
    return list(first.features["label"].names)
