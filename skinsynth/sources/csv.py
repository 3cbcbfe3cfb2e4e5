"""A table of images plus a column mapping: which column holds the image path, the label, the group and each attribute.

The mapping is a YAML file (`--mapping`; see dataset_scripts/mappings/ for Fitzpatrick17k, DDI, PAD-UFES-20 and
SCIN) or the same fields given as options. Labels and attribute values can be renamed through a `values` table, so
every source ends up with the same names (`melanoma`, `body_site: back`, `fitzpatrick: III`)::

    name: PAD-UFES-20
    license: cc-by-4.0
    citation: "..."
    table: metadata.csv            # inside SOURCE (SOURCE may also be the table itself)
    images: images                 # folder the image paths are relative to (default: the table's folder)
    image: {column: img_id}        # `template: "{}.jpg"` when the column holds ids, not file names
    label: {column: diagnostic, values: {MEL: melanoma, NEV: melanocytic_nevus}}
    group_id: {column: patient_id} # optional: each image is its own group without it
    attributes:
      fitzpatrick: {column: fitspatrick, values: {"1": I, "2": II}}
    columns: [lesion_id]           # source columns kept as they are

Without `values`, a label is its text in snake_case and an attribute value is kept as written. Values listed in
`missing` (default: empty, `unknown`, `nan`) become None. Numbers written as `2.0` are read as `2`. A label
outside a `values` table is counted as `unknown_label` (one mapped to null as `excluded_label`), a row whose file is
absent as `missing_file`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DatasetError
from ..recipe import RESERVED_COLUMNS
from ..recipe import load_yaml
from . import Example, Source, SourceInfo, label_name, open_table

DEFAULT_MISSING = ("", "unknown", "nan", "NaN", "None", "null")


class Column(BaseModel):
    """A source column and how its values become dataset values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    values: dict[str, str | None] | None = None
    template: str = "{}"
    missing: tuple[str, ...] = DEFAULT_MISSING


class ColumnMapping(BaseModel):
    """How a table describes a dataset; validated before any image is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    license: str | None = None
    citation: str | None = None
    homepage: str | None = None
    table: str | None = None
    images: str | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    image: Column
    label: Column
    group_id: Column | None = None
    attributes: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Column] = {}
    columns: tuple[str, ...] = ()


def load_mapping(mapping) -> ColumnMapping:
    """A `ColumnMapping` from a YAML file path, a dict, or a `ColumnMapping`; errors name the field."""
    if isinstance(mapping, ColumnMapping):
        return mapping
    source = "column mapping"
    if isinstance(mapping, (str, Path)):
        source = str(mapping)
        mapping = load_yaml(mapping, "column mapping")
    if mapping is None:
        raise DatasetError("`--format csv` needs a column mapping: `--mapping FILE`, or at least `--image-column` and `--label-column`")
    try:
        parsed = ColumnMapping.model_validate(mapping)
    except ValidationError as err:
        first = err.errors()[0]
        raise DatasetError(f"{source}: `{'.'.join(map(str, first['loc']))}`: {first['msg']}") from None
    names = [*parsed.attributes, *parsed.columns]
    bad = sorted({n for n in names if n in RESERVED_COLUMNS | {"label"} or names.count(n) > 1})
    if bad:
        raise DatasetError(f"{source}: dataset column name(s) {bad} are reserved (image, label, group_id…) or given twice in `attributes`/`columns`")
    return parsed


def _number_text(value: str) -> str:
    """`2.0` -> `2`: tables saved by pandas write integers with a float column's `.0`."""
    return value[:-2] if re.fullmatch(r"-?\d+\.0", value) else value


def _value(row: dict, spec: Column) -> str | None:
    raw = _number_text((row.get(spec.column) or "").strip())
    if raw in spec.missing:
        return None
    if spec.values is not None:
        return spec.values.get(raw, raw)
    return raw


def _find_table(source: Path, mapping: ColumnMapping) -> Path:
    if source.is_file():
        return source
    if mapping.table is None:
        tables = sorted(source.glob("*.csv"))
        if len(tables) != 1:
            raise DatasetError(f"`{source}` holds {len(tables)} .csv files; name the table with `table:` in the mapping or pass the file itself")
        return tables[0]
    if not (source / mapping.table).is_file():
        raise DatasetError(f"table `{mapping.table}` not found in `{source}`")
    return source / mapping.table


def read(source: Path, mapping) -> Source:
    mapping = load_mapping(mapping)
    table = _find_table(source, mapping)
    image_root = table.parent / mapping.images if mapping.images else table.parent
    with open_table(table) as f:
        reader = csv.DictReader(f, delimiter=mapping.delimiter)
        header = reader.fieldnames or []
        needed = [mapping.image.column, mapping.label.column, *(c.column for c in mapping.attributes.values()), *mapping.columns]
        needed += [mapping.group_id.column] if mapping.group_id else []
        absent = sorted({c for c in needed if c not in header})
        if absent:
            raise DatasetError(f"{table} has no column(s) {absent}; its columns are {header}")
        rows = list(reader)

    known_labels = None if mapping.label.values is None else {label_name(v) for v in mapping.label.values.values() if v is not None}
    examples, skipped, labels = [], Counter(), set()
    for row in rows:
        raw_label = _number_text((row.get(mapping.label.column) or "").strip())
        if raw_label in mapping.label.missing:
            skipped["missing_label"] += 1
            continue
        if mapping.label.values is not None and raw_label not in mapping.label.values:
            skipped["unknown_label"] += 1
            continue
        label = mapping.label.values[raw_label] if mapping.label.values is not None else raw_label
        if label is None:
            skipped["excluded_label"] += 1
            continue
        label = label_name(label)
        image = _value(row, mapping.image)
        path = image_root / mapping.image.template.format(image) if image else None
        if path is None or not path.is_file():
            skipped["missing_file"] += 1
            continue
        group = _value(row, mapping.group_id) if mapping.group_id else None
        labels.add(label)
        examples.append(
            Example(
                path=path,
                label=label,
                group_id=group if group is not None else image,
                attributes={name: _value(row, spec) for name, spec in mapping.attributes.items()},
                columns={name: _value(row, Column(column=name)) for name in mapping.columns},
            )
        )
    names = sorted(known_labels) if known_labels is not None else sorted(labels)
    info = SourceInfo(name=mapping.name or table.stem, license=mapping.license, citation=mapping.citation, homepage=mapping.homepage)
    return Source(info, examples, names, tuple(mapping.attributes), tuple(mapping.columns), skipped, {"mapping": mapping.model_dump(mode="json")})
