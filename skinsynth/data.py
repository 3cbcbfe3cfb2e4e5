"""Open a labeled image dataset in the skinsynth layout, from a local folder or a Hub id, with one clear error.

`benchmark`, `finetune`, `filter` and the audits all read datasets through `open_dataset`; a dataset is usable when it has
an `image` column and a `label` column that is a `ClassLabel` (the names are what arms, captions and filters match).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .errors import DatasetError
from .shards import DATA_DIR, MANIFEST_FILES, read_manifest

SHARD_NAME = re.compile(r"(?P<split>[A-Za-z0-9_]+)-\d{5}-of-\d{5}\.arrow")


def open_dataset(source: str | Path, *, revision: str | None = None, required_splits: tuple[str, ...] = ()):
    """The dataset `source` as a `DatasetDict`, checked for `image` and a `ClassLabel` `label`.

    A local folder of Arrow shards (`data/{split}-NNNNN-of-NNNNN.arrow`, what `generate`, `prepare` and `filter`
    write) is memory-mapped in place: no copy into the Hugging Face cache, so a 200 GB dataset needs 200 GB, not 400,
    and opening it takes a moment. Hub ids and other layouts (Parquet) go through `datasets.load_dataset`.
    """
    import datasets

    source = str(source)
    local = Path(source).expanduser()
    if not local.exists() and source.startswith((".", "/", "~")):
        raise DatasetError(f"dataset folder `{source}` does not exist")
    if local.is_dir() and not any(local.glob("data/*.arrow")) and not any(local.glob("data/*.parquet")):
        raise DatasetError(f"`{source}` holds no data/*.arrow shards: is it the output of `skinsynth generate` or `skinsynth prepare`?")
    try:
        shards = _local_shards(local) if local.is_dir() else {}
        if shards:
            dataset = datasets.DatasetDict({split: _concatenate([datasets.Dataset.from_file(str(f), split=split) for f in files]) for split, files in shards.items()})
        else:
            dataset = datasets.load_dataset(str(local) if local.exists() else source, revision=revision)
    except Exception as err:  # datasets and pyarrow raise many types (offline, missing repo, bad files)
        raise DatasetError(f"could not load dataset `{source}`: {err}") from err
    missing = [split for split in required_splits if split not in dataset]
    if missing:
        raise DatasetError(f"dataset `{source}` has no {', '.join(missing)} split (it has: {', '.join(dataset)})")
    for split, part in dataset.items():
        if "image" not in part.features or not isinstance(part.features.get("label"), datasets.ClassLabel):
            raise DatasetError(f"dataset `{source}` ({split}) needs an `image` column and a ClassLabel `label` column; it has {part.features}")
    return dataset


def stored_images(split, rows=None) -> list:
    """Each image of `split` (or of `rows`, positions in it) as stored: its bytes, or its path when only a path is
    stored; read straight from Arrow, without decoding.

    Positions are the split's own: a split that `select`, `filter` or `shuffle` made maps them onto rows of an
    unchanged table, so reading `split.data` by position would return other rows' images."""
    import pyarrow.compute as pc

    view = split.select_columns(["image"]).with_format("arrow")
    column = (view[:] if rows is None else view[[int(row) for row in rows]])["image"]
    stored = pc.struct_field(column, "bytes").to_pylist()
    paths = pc.struct_field(column, "path").to_pylist()
    return [b if b is not None else p for b, p in zip(stored, paths)]


def _local_shards(folder: Path) -> dict[str, list[Path]]:
    """Split name -> its Arrow shard files in order, as `load_dataset` would find them; splits in the usual order."""
    shards: dict[str, list[Path]] = {}
    for file in sorted((folder / DATA_DIR).glob("*.arrow")):
        match = SHARD_NAME.fullmatch(file.name)
        if match is not None:
            shards.setdefault(match["split"], []).append(file)
    order = {name: i for i, name in enumerate(("train", "validation", "test"))}
    return dict(sorted(shards.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _concatenate(parts: list):
    import datasets

    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def label_names(dataset) -> list[str]:
    """Class names of a dataset (or DatasetDict), in label order."""
    first = next(iter(dataset.values())) if hasattr(dataset, "values") else dataset
    return list(first.features["label"].names)


def dataset_key(source: str | Path, splits: tuple[str, ...], *, revision: str | None = None) -> dict:
    """What names the content of `splits` of a dataset, small enough to store beside every result made from it.

    A local skinsynth folder is named by its manifest's shard sha256s (one digest over those of `splits`); a
    local folder without a manifest (or whose manifest lacks a split) by the fingerprint of its `data/` files,
    cached by size and modification time; a Hub id by the commit it resolves to. The card and `reports/` are left
    out on purpose: `benchmark --update-card` writes them, and that must not make the data look new.
    """
    source = str(source)
    local = Path(source).expanduser()
    if not local.is_dir():
        return {"source": source, "revision": revision, "commit": _hub_commit(source, revision)}
    has_manifest = any((local / name).is_file() for name in MANIFEST_FILES)
    shards = read_manifest(local)[1].get("splits", {}) if has_manifest else {}  # a damaged one raises: rebuild it
    if all(split in shards for split in splits):
        listed = [(shard["file"], shard["sha256"]) for split in splits for shard in shards[split]["shards"]]
        return {"source": source, "shards_sha256": hashlib.sha256(json.dumps(listed).encode()).hexdigest()}
    from .fingerprint import folder_fingerprint

    return {"source": source, "data_fingerprint": folder_fingerprint(local / DATA_DIR)}


def _hub_commit(source: str, revision: str | None) -> str:
    """The commit `datasets` loads a Hub dataset from: its builder's hash (from the cache when offline)."""
    import datasets

    try:
        return datasets.load_dataset_builder(source, revision=revision).hash
    except Exception as err:  # as in open_dataset: offline, missing repo, bad files
        raise DatasetError(f"could not resolve which commit of dataset `{source}` to use: {err}") from err
