"""What a card says about the data, read from the shard files themselves (labels and attribute columns only; no
image is decoded): counts per class and attribute, groups shared between splits, values a recipe asked for but lacks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..paths import inside as inside_root
from .templates import cell


@dataclass(frozen=True)
class DataSummary:
    """What the card says about the data, read from the shard files themselves."""

    features: object  # datasets.Features, from the shards' Arrow schema
    columns: dict[str, dict[str, list]]  # split -> column -> values (label and attribute columns only)

    @property
    def label_names(self) -> list[str]:
        return list(self.features["label"].names)

    @property
    def split_rows(self) -> dict[str, int]:
        return {split: len(columns["label"]) for split, columns in self.columns.items()}


def open_stream(path: Path):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(str(path)))


def read_summary(root: Path, manifest: dict, columns: list[str]) -> DataSummary:
    """Features and the label and given columns of every split, from the shards the manifest lists (memory-mapped;
    no image is decoded)."""
    import datasets

    features = None
    read: dict[str, dict[str, list]] = {}
    for split, info in manifest["splits"].items():
        values: dict[str, list] = {name: [] for name in ["label", *columns]}
        for shard in info["shards"]:
            path = inside_root(root, shard["file"], "the manifest's shard list")
            if not path.is_file():
                raise DatasetError(f"shard `{shard['file']}` is missing from {root}; run `skinsynth verify {root}` for details")
            table = open_stream(path).read_all()
            features = features or datasets.Features.from_arrow_schema(table.schema)
            for name in values:
                if name not in table.column_names:
                    raise DatasetError(f"shard `{shard['file']}` has no `{name}` column; its columns are {table.column_names}")
                values[name] += table.column(name).to_pylist()
        read[split] = values
    if features is None or not isinstance(features.get("label"), datasets.ClassLabel):
        raise DatasetError(f"{root} has no shard with a ClassLabel `label` column to describe")
    return DataSummary(features, read)


def count_tables(summary: DataSummary, attributes: list[str], attribute_values: dict[str, list[str]]) -> list[dict]:
    """Per-class and per-attribute-value image counts for each split, as Markdown-ready tables.

    `attribute_values` fixes the row order (the recipe's values); values found in the data but not listed follow,
    sorted, and missing values (None) are shown as `unknown`. Ages written in years are counted in decades
    (`40-49`), as twins' recipes and prompts use them: one row per year says little and runs long.
    """
    from ..recipe_from import BANDED, age_band

    splits = list(summary.columns)
    header = ["", *splits, "total"]

    def table(title: str, keys: list, counts: dict[str, Counter], names: dict) -> dict:
        rows = []
        for key in keys:
            per_split = [counts[split][key] for split in splits]
            rows.append([cell(names.get(key, key)), *map(str, per_split), str(sum(per_split))])
        totals = [sum(counts[split].values()) for split in splits]
        rows.append(["**total**", *(f"**{n}**" for n in totals), f"**{sum(totals)}**"])
        return {"title": title, "header": [title.split(" per ")[-1], *header[1:]], "rows": rows}

    labels = {split: Counter(columns["label"]) for split, columns in summary.columns.items()}
    tables = [table("Images per class", list(range(len(summary.label_names))), labels, dict(enumerate(summary.label_names)))]
    for name in attributes:
        band = age_band if name in BANDED else (lambda value: value)
        counts = {split: Counter(None if v is None else band(v) for v in columns[name]) for split, columns in summary.columns.items()}
        seen = set().union(*counts.values())
        listed = list(dict.fromkeys(band(v) for v in attribute_values.get(name, [])))
        extra = sorted((v for v in seen if v is not None and v not in listed), key=_natural)
        keys = listed + extra + ([None] if None in seen else [])
        tables.append(table(f"Images per {name}", keys, counts, {None: "unknown"}))
    return tables


def _natural(value: str) -> tuple:
    """Sort key putting numbers (ages) in numeric order, before words."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def shared_groups(summary: DataSummary) -> int:
    """How many `group_id`s (lesions, patients) have images in more than one split: each one leaks between splits."""
    seen: Counter = Counter()
    for columns in summary.columns.values():
        seen.update(set(columns["group_id"]) - {None})
    return sum(count > 1 for count in seen.values())


def missing_values(summary: DataSummary, attribute_values: dict[str, list[str]]) -> list[str]:
    """`attribute=value` pairs the recipe asks for that no image in the dataset has."""
    found = {name: set().union(*(set(columns[name]) for columns in summary.columns.values())) for name in attribute_values}
    return [f"{name}={value}" for name, values in attribute_values.items() for value in values if value not in found[name]]
