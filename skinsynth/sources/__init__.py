"""Readers of real image datasets in their download layout: one small module per format over one shared shape.

A reader turns a source folder into a `Source`: one `Example` per image (its file, label, group, attributes and
source columns) plus what it could not use (`skipped`, counted by reason). Readers never decode images and never
write: checking, converting, splitting and writing happen once, in `skinsynth.prepare`, for every format alike.

Formats: `ham10000` (images + HAM10000_metadata.csv), `imagefolder` (one folder per class, optionally under
train/test), `csv` (a table plus a column mapping; see dataset_scripts/mappings/ for public datasets), `skinsynth`
(datasets `prepare` wrote, combined into one).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import IMAGE_SUFFIXES, Example, FileIndex, Source, SourceInfo, label_name, open_table, visible_files

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "Example", "FileIndex", "Source", "SourceInfo", "label_name", "open_table", "read_source", "visible_files"]

FORMATS = ("ham10000", "imagefolder", "csv", "skinsynth")


def read_source(source: str | Path | list, format: str, mapping=None) -> Source:
    """Read `source` with the reader of `format` (`mapping`: the CSV column mapping, a file or a `ColumnMapping`).
    Only `skinsynth` takes several sources (a list), combining them."""
    from . import csv, ham10000, imagefolder, skinsynth

    sources = [Path(s).expanduser() for s in (source if isinstance(source, (list, tuple)) else [source])]
    for one in sources:
        if not one.exists():
            raise DatasetError(f"source `{one}` does not exist")
    if mapping is not None and format != "csv":
        raise DatasetError(f"a column mapping only applies to `--format csv`, not `{format}`")
    if format == "skinsynth":
        return skinsynth.read(sources)
    if len(sources) != 1:
        raise DatasetError(f"`--format {format}` reads one source, got {len(sources)}; only `--format skinsynth` combines several")
    source = sources[0]
    if format == "csv":
        return csv.read(source, mapping)
    if format == "ham10000":
        return ham10000.read(source)
    if format == "imagefolder":
        return imagefolder.read(source)
    raise DatasetError(f"unknown format `{format}`; use one of {', '.join(FORMATS)}")
