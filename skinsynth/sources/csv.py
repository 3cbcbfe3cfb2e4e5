"""A table of images plus a column mapping: which column holds the image path, the label, the group and each attribute.

The mapping is a YAML file (`--mapping`; see dataset_scripts/mappings/ for Fitzpatrick17k, DDI, PAD-UFES-20 and
SCIN) or the same fields given as options. Labels and attribute values can be renamed through a `values` table, so
every source ends up with the same names (`melanoma`, `body_site: back`, `fitzpatrick: III`)::

    name: PAD-UFES-20
    license: cc-by-4.0
    citation: "..."
    table: metadata.csv            # inside SOURCE (SOURCE may also be the table itself)
    images: images                 # where the images are, relative to SOURCE (default: SOURCE, or the table file's folder)
    image: {column: img_id}        # `template: "{}.jpg"` when the column holds ids, not file names
    label: {column: diagnostic, values: {MEL: melanoma, NEV: melanocytic_nevus}}
    group_id: {column: patient_id} # optional: each image is its own group without it
    attributes:
      fitzpatrick: {column: fitspatrick, values: {"1": I, "2": II}}
    columns: [lesion_id]           # source columns kept as they are

Challenge tables give the label as one-hot columns and the metadata in a second table (ISIC 2018, 2019)::

    table: [ISIC_2019_Training_GroundTruth.csv]   # a list: the first that exists (e.g. the ISIC and the Kaggle name)
    images: ISIC_2019_Training_Input              # relative to SOURCE (the table's folder when SOURCE is the table)
    image: {column: image, template: "{}.jpg"}
    label: {one_hot: {MEL: melanoma, NV: melanocytic_nevus, UNK: null}}   # column -> class; 1 / 1.0 marks it
    join: {table: ISIC_2019_Training_Metadata.csv, key: image}            # its columns join each row by `key`

A class the label table names but no image has (a subset of a challenge set) is left out and reported as absent;
list the classes that must be there in `classes: [melanoma, dermatofibroma]` to make that an error instead.

A dataset released with its own validation and test sets in tables of the same columns (ISIC 2018 Task 3) names
them under `splits`; each one present keeps its images in that split, and the main table becomes train::

    splits:
      validation: {table: [ISIC2018_Task3_Validation_GroundTruth.csv], images: ISIC2018_Task3_Validation_Input}
      test: {table: [ISIC2018_Task3_Test_GroundTruth.csv], images: ISIC2018_Task3_Test_Input}

Without `values`, a label is its text in snake_case and an attribute value is kept as written. Values listed in
`missing` (default: empty, `unknown`, `nan`) become None. Numbers written as `2.0` are read as `2`. A label
outside a `values` table is counted as `unknown_label` (one mapped to null as `excluded_label`), a row whose file is
absent as `missing_file`; a one-hot row with no 1 as `no_label`, with several as `several_labels`; a row of the
joined table naming no image of the main table as `metadata_without_image`.

Images are found anywhere under `images` (an index of the folder is built once): a download unzipped into several
folders (`imgs_part_1/` … `imgs_part_3/`) needs no merging; a file name found in two places is an error naming both.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import DatasetError
from ..paths import inside
from ..recipe import RESERVED_COLUMNS
from ..recipe import load_yaml
from .base import Example, FileIndex, Source, SourceInfo, label_name, open_table

logger = logging.getLogger(__name__)

DEFAULT_MISSING = ("", "unknown", "nan", "NaN", "None", "null")


class Column(BaseModel):
    """A source column and how its values become dataset values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    values: dict[str, str | None] | None = None
    template: str = "{}"
    missing: tuple[str, ...] = DEFAULT_MISSING


class Label(Column):
    """The label: one column (with optional `values`), or `one_hot`: {column: class} where the column holding 1 names it."""

    column: str | None = None
    one_hot: dict[str, str | None] | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.column is None) == (self.one_hot is None):
            raise ValueError("give the label as `column` (one column holding the class) or `one_hot` ({column: class}), exactly one of them")
        if self.one_hot is not None and self.values is not None:
            raise ValueError("`values` renames a label column's values; with `one_hot`, name the classes in its {column: class} table")
        return self


class Join(BaseModel):
    """A second table whose columns are joined to each row of the main one: `key` in the main table matches
    `other_key` (default: the same name) in this one. (Not `on`: YAML reads a bare `on` as `true`.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    key: str
    other_key: str | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","


class SplitTable(BaseModel):
    """A table of one of the dataset's own evaluation splits (ISIC 2018's validation and test ground truth): the
    same columns as the main table, its own images folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str | list[str]
    images: str | None = None


class ColumnMapping(BaseModel):
    """How a table describes a dataset; validated before any image is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    license: str | None = None
    citation: str | None = None
    homepage: str | None = None
    table: str | list[str] | None = None
    images: str | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    image: Column
    label: Label
    join: Join | None = None
    group_id: Column | None = None
    attributes: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Column] = {}
    columns: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    splits: dict[Literal["validation", "test"], SplitTable] = {}


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
    table = _first_present(source, mapping.table, "the mapping's `table`")
    if table is None:
        names = [mapping.table] if isinstance(mapping.table, str) else mapping.table
        raise DatasetError(f"table {' or '.join(f'`{n}`' for n in names)} not found in `{source}`; pass the table file itself as SOURCE if it has another name")
    return table


def _first_present(base: Path, names: str | list[str], what: str) -> Path | None:
    """The first of `names` (relative to `base`) that is a file, or None."""
    for name in [names] if isinstance(names, str) else names:
        if inside(base, name, what).is_file():
            return base / name
    return None


def _tables(source: Path, mapping: ColumnMapping) -> list[tuple[str | None, Path, Path]]:
    """(split, table, images folder) of each table to read: the main one, then each of the mapping's `splits` whose
    table is present. With one present, the main table's rows are the train split (a download of the training set
    alone is split as usual)."""
    table = _find_table(source, mapping)
    base = source if source.is_dir() else table.parent
    images = inside(base, mapping.images, "the mapping's `images`") if mapping.images else base
    tables: list[tuple[str | None, Path, Path]] = [(None, table, images)]
    for split, spec in mapping.splits.items():
        found = _first_present(base, spec.table, f"the mapping's `splits.{split}.table`")
        if found is not None:
            tables.append((split, found, inside(base, spec.images, f"the mapping's `splits.{split}.images`") if spec.images else base))
        else:
            logger.info("no %s table (%s) in %s: the %s split is made from the main table", split, spec.table, base, split)
    if len(tables) > 1:
        tables[0] = ("train", table, images)
    return tables


def _read_table(path: Path, delimiter: str) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        raise DatasetError(f"table `{path}` not found")
    with open_table(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        return list(reader.fieldnames or []), list(reader)


def _joined(rows: list[dict], header: list[str], join: Join, base: Path, skipped: Counter) -> tuple[list[dict], list[str]]:
    """The main table's rows with the joined table's columns added (the main table's own values win)."""
    other_path = inside(base, join.table, "the mapping's `join.table`")
    other_header, other_rows = _read_table(other_path, join.delimiter)
    key = join.other_key or join.key
    if join.key not in header:
        raise DatasetError(f"`join.key`: the main table has no column `{join.key}`; its columns are {header}")
    if key not in other_header:
        raise DatasetError(f"`join`: {other_path} has no column `{key}`; its columns are {other_header}")
    by_key: dict[str, dict] = {}
    for row in other_rows:
        name = (row.get(key) or "").strip()
        if name in by_key:
            raise DatasetError(f"{other_path}: `{key}` {name!r} is on two rows; the join needs one row per image")
        by_key[name] = row
    names = {(row.get(join.key) or "").strip() for row in rows}
    skipped["metadata_without_image"] += sum(name not in names for name in by_key)
    return [{**by_key.get((row.get(join.key) or "").strip(), {}), **row} for row in rows], header + [c for c in other_header if c not in header]


def _is_one(text: str | None) -> bool:
    try:
        return float(text or "") == 1
    except ValueError:
        return False


def _label(row: dict, spec: Label) -> tuple[str | None, str | None]:
    """(class name, None), or (None, why the row has none): missing_label, no_label, several_labels, unknown_label,
    excluded_label."""
    if spec.one_hot is not None:
        on = [column for column in spec.one_hot if _is_one(row.get(column))]
        if len(on) != 1:
            return None, "no_label" if not on else "several_labels"
        label = spec.one_hot[on[0]]
    else:
        raw = _number_text((row.get(spec.column) or "").strip())
        if raw in spec.missing:
            return None, "missing_label"
        if spec.values is not None and raw not in spec.values:
            return None, "unknown_label"
        label = spec.values[raw] if spec.values is not None else raw
    if label is None:
        return None, "excluded_label"
    return label_name(label), None


def read(source: Path, mapping) -> Source:
    mapping = load_mapping(mapping)
    tables = _tables(source, mapping)
    table = tables[0][1]
    base = source if source.is_dir() else table.parent
    skipped: Counter = Counter()
    label_columns = list(mapping.label.one_hot or {}) if mapping.label.one_hot is not None else [mapping.label.column]
    needed = [mapping.image.column, *label_columns, *(c.column for c in mapping.attributes.values()), *mapping.columns]
    needed += [mapping.group_id.column] if mapping.group_id else []
    rows, origins, headers = [], [], {}
    for split, path, images in tables:  # each row remembers its split, table, line and images folder
        headers[path], part = _read_table(path, mapping.delimiter)
        rows += part
        origins += [(split, path, number, images) for number in range(1, len(part) + 1)]
    if mapping.join is not None:
        rows, with_join = _joined(rows, headers[table], mapping.join, base, skipped)
        headers = {path: header + [c for c in with_join if c not in header] for path, header in headers.items()}
    for path, header in headers.items():
        absent = sorted({c for c in needed if c not in header})
        if absent:
            raise DatasetError(f"{path}{' (with the joined table)' if mapping.join else ''} has no column(s) {absent}; its columns are {header}")
    indexes = {images: FileIndex(images) for _, _, images in tables}

    renamed = mapping.label.one_hot if mapping.label.one_hot is not None else mapping.label.values
    known_labels = None if renamed is None else {label_name(v) for v in renamed.values() if v is not None}
    examples, labels = [], set()
    for row, (split, table_path, number, images) in zip(rows, origins):
        files = indexes[images]
        label, reason = _label(row, mapping.label)
        if reason is not None:
            skipped[reason] += 1
            continue
        image = _value(row, mapping.image)
        name = mapping.image.template.format(image) if image else None
        if name is not None:  # an absolute path or a `..` climbing out is refused, not looked up
            inside(files.root, name, f"{table_path.name} (data row {number}, column `{mapping.image.column}`)")
        path = files.find(name) if name is not None else None
        if path is None:
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
                split=split,
            )
        )
    names = sorted(known_labels) if known_labels is not None else sorted(labels)
    info = SourceInfo(name=mapping.name or table.stem, license=mapping.license, citation=mapping.citation, homepage=mapping.homepage)
    return Source(info, examples, names, tuple(mapping.attributes), tuple(mapping.columns), +skipped, {"mapping": mapping.model_dump(mode="json"), "official_splits": [split for split, _, _ in tables[1:]]},
                  required_classes=tuple(label_name(c) for c in mapping.classes))
