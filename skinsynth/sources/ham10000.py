"""HAM10000 in its download layout: `HAM10000_metadata.csv` (or `metadata.csv`) beside the image folder(s).

The Harvard Dataverse release splits the JPEGs over `HAM10000_images_part_1/` and `_part_2/`; copies often merge
them into `images/`. Every folder beside the table is searched. Labels become the full conditions in snake_case,
the original code stays in `dx`; `lesion_id` is the group, so images of one lesion never straddle splits.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

from ..errors import DatasetError
from .base import Example, Source, SourceInfo, open_table

METADATA_FILES = ("HAM10000_metadata.csv", "HAM10000_metadata", "metadata.csv")
COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")

LABELS = {
    "nv": "melanocytic_nevus",
    "mel": "melanoma",
    "bkl": "benign_keratosis",
    "bcc": "basal_cell_carcinoma",
    "akiec": "actinic_keratosis",
    "vasc": "vascular_lesion",
    "df": "dermatofibroma",
}

INFO = SourceInfo(
    name="HAM10000",
    license="cc-by-nc-sa-4.0",
    citation=(
        "@article{tschandl2018ham10000,\n"
        "  title = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},\n"
        "  author = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},\n"
        "  journal = {Scientific Data},\n  volume = {5},\n  pages = {180161},\n  year = {2018},\n"
        "  doi = {10.1038/sdata.2018.161}\n}"
    ),
    homepage="https://doi.org/10.7910/DVN/DBW86T",
)


def _known(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "unknown") else value


def _age(value: str) -> str | None:
    """Ages are written as `80.0`; recipes and cards read `80`."""
    value = value.strip()
    if not value:
        return None
    try:
        return str(int(float(value)))
    except ValueError:
        raise DatasetError(f"HAM10000 metadata: age {value!r} is not a number") from None


def find_metadata(root: Path) -> Path:
    if root.is_file():
        return root
    for name in METADATA_FILES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"`{root}` holds no {' or '.join(METADATA_FILES)}: is it the HAM10000 download folder?")


def find_images(folder: Path) -> dict[str, Path]:
    """{image_id: path} of the JPEGs in `folder` and its direct subfolders (`images/`, `HAM10000_images_part_1/`…);
    listed with `os.scandir`, without a `stat` per file (10,015 of them)."""
    images = {}
    for directory in [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".jpg"):
                    images.setdefault(entry.name[:-4], directory / entry.name)
    return images


def read(root: Path) -> Source:
    metadata = find_metadata(root)
    images = find_images(metadata.parent)
    with open_table(metadata) as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{metadata} lacks the column(s) {missing}; HAM10000 metadata has {list(COLUMNS)}")
        rows = list(reader)
    examples, skipped = [], Counter()
    for row in rows:
        label = LABELS.get(row["dx"].strip())
        path = images.get(row["image_id"].strip())
        if label is None:
            skipped["unknown_label"] += 1
        elif path is None:
            skipped["missing_file"] += 1
        else:
            examples.append(
                Example(
                    path=path,
                    label=label,
                    group_id=row["lesion_id"].strip(),
                    attributes={"body_site": _known(row["localization"]), "sex": _known(row["sex"]), "age": _age(row["age"])},
                    columns={"dx": row["dx"].strip(), "dx_type": _known(row["dx_type"]), "image_id": row["image_id"].strip()},
                )
            )
    return Source(INFO, examples, list(LABELS.values()), ("body_site", "sex", "age"), ("dx", "dx_type", "image_id"), skipped)
