"""Readers of real image datasets in their download layout: one small module per format over one shared shape.

A reader turns a source folder into a `Source`: one `Example` per image (its file, label, group, attributes and
source columns) plus what it could not use (`skipped`, counted by reason). Readers never decode images and never
write: checking, converting, splitting and writing happen once, in `skinsynth.prepare`, for every format alike.

Formats: `ham10000` (images + HAM10000_metadata.csv), `imagefolder` (one folder per class, optionally under
train/test), `csv` (a table plus a column mapping; see dataset_scripts/mappings/ for public datasets).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError

FORMATS = ("ham10000", "imagefolder", "csv")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Example:
    """One image as the source describes it. `split` is set only when the source itself fixes it (train/test folders)."""

    path: Path
    label: str
    group_id: str
    attributes: dict[str, str | None] = field(default_factory=dict)
    columns: dict[str, str | None] = field(default_factory=dict)
    split: str | None = None


@dataclass(frozen=True)
class SourceInfo:
    """What the card and manifest say about the source: its name, license (Hub license id) and citation."""

    name: str
    license: str | None = None
    citation: str | None = None
    homepage: str | None = None


@dataclass(frozen=True)
class Source:
    """A read source. `label_names` fixes the ClassLabel order; `attributes` and `columns` fix the extra columns;
    `reader_options` (e.g. the CSV mapping) go into the manifest so the conversion can be repeated."""

    info: SourceInfo
    examples: list[Example]
    label_names: list[str]
    attributes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    skipped: Counter = field(default_factory=Counter)
    reader_options: dict = field(default_factory=dict)


def label_name(text: str) -> str:
    """A class name as recipes and ClassLabels use it: lower snake_case (`Basal Cell Carcinoma` -> `basal_cell_carcinoma`)."""
    name = re.sub(r"[^0-9a-z]+", "_", text.strip().lower()).strip("_")
    if not name:
        raise DatasetError(f"label {text!r} has no letters or digits to name a class with")
    return name


def open_table(path: Path) -> io.StringIO:
    """A CSV table's text (UTF-8, with or without a byte-order mark), ready for `csv.reader`; a byte that is not
    UTF-8 is a `DatasetError` naming the file, the line and the byte, instead of a traceback."""
    data = path.read_bytes()
    try:
        return io.StringIO(data.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8; convert the file, e.g. `iconv -f latin1 -t utf-8`") from None


def read_source(source: str | Path, format: str, mapping=None) -> Source:
    """Read `source` with the reader of `format` (`mapping`: the CSV column mapping, a file or a `ColumnMapping`)."""
    from . import csv, ham10000, imagefolder

    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetError(f"source `{source}` does not exist")
    if format == "csv":
        return csv.read(source, mapping)
    if mapping is not None:
        raise DatasetError(f"a column mapping only applies to `--format csv`, not `{format}`")
    if format == "ham10000":
        return ham10000.read(source)
    if format == "imagefolder":
        return imagefolder.read(source)
    raise DatasetError(f"unknown format `{format}`; use one of {', '.join(FORMATS)}")
