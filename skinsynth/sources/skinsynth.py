"""Datasets `skinsynth prepare` wrote, combined into one: `prepare A B … --format skinsynth --out C`.

Prepared datasets share the schema (`image`, `label`, attribute and source columns, `group_id`) and, through the
mappings, the class names (HAM10000's snake_case names), so combining them is a matter of reading their rows
back. Every row keeps where it came from in a `source` column (the dataset's name); group ids are prefixed with
it (`HAM10000/HAM_0000118`), since two datasets' ids need not mean the same lesion. The original splits are
not kept: the combined rows are split again, grouped, after `prepare` has found the copies across datasets
(ISIC 2019 holds HAM10000's images) and put each set in one group, so no lesion straddles the new splits.

Classes are the union of the datasets' classes (a class only some of them have is kept, and logged); attributes
and source columns too, empty (None) for rows whose dataset lacks them. Image bytes are read from the shards
(memory-mapped) when `prepare` checks and writes them, never all at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from pathlib import Path

from ..errors import DatasetError
from ..paths import inside
from ..shards import read_manifest
from .base import Example, Source, SourceInfo

logger = logging.getLogger(__name__)
SOURCE_COLUMN = "source"


def _image_bytes(images, index: int) -> bytes:
    return images[index].as_py()["bytes"]


def _read_one(folder: Path) -> tuple[dict, list[Example]]:
    import pyarrow as pa

    name, manifest = read_manifest(folder)
    if name != "prepare.json":
        raise DatasetError(f"`{folder}` was written by `skinsynth generate`; `--format skinsynth` combines datasets `skinsynth prepare` wrote")
    if manifest.get("status") != "complete":
        raise DatasetError(f"`{folder}` is an unfinished `prepare` output; run that conversion again first")
    dataset = (manifest.get("source") or {}).get("name") or folder.name
    label_names = manifest["label_names"]
    attributes, columns = manifest.get("attributes") or [], manifest.get("source_columns") or []
    examples = []
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = inside(folder, shard["file"], f"{folder / name}'s shard list")
            if not path.is_file():
                raise DatasetError(f"shard `{shard['file']}` is missing from `{folder}`; run `skinsynth verify {folder}`")
            table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
            images = table.column("image")
            stored = images.combine_chunks().field("path").to_pylist()
            names = [stored_name or f"{shard['file']}-{i}" for i, stored_name in enumerate(stored)]
            values = {column: table.column(column).to_pylist() for column in ["label", "group_id", *attributes, *columns]}
            for i in range(table.num_rows):
                examples.append(
                    Example(
                        path=folder / split / names[i],
                        label=label_names[values["label"][i]],
                        group_id=f"{dataset}/{values['group_id'][i]}",
                        attributes={a: values[a][i] for a in attributes},
                        columns={**{c: values[c][i] for c in columns}, SOURCE_COLUMN: dataset},
                        read=partial(_image_bytes, images, i),
                    )
                )
    return manifest, examples


def read(folders: list[Path]) -> Source:
    read_all = [(folder, *_read_one(folder)) for folder in folders]
    names = [(m.get("source") or {}).get("name") or f.name for f, m, _ in read_all]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"two of the datasets to combine are both named {twice}: rows could not say which one they come from")
    labels: list[str] = []
    attributes: list[str] = []
    columns: list[str] = []
    for _, manifest, _ in read_all:
        labels += [n for n in manifest["label_names"] if n not in labels]
        attributes += [a for a in manifest.get("attributes") or [] if a not in attributes]
        columns += [c for c in manifest.get("source_columns") or [] if c not in columns and c != SOURCE_COLUMN]
    for name, (_, manifest, _) in zip(names, read_all):
        only_elsewhere = [label for label in labels if label not in manifest["label_names"]]
        if only_elsewhere:
            logger.info("%s has no class %s (another dataset has)", name, ", ".join(only_elsewhere))
    examples = []
    for _, _, rows in read_all:
        examples += [
            Example(e.path, e.label, e.group_id, {a: e.attributes.get(a) for a in attributes}, {**{c: e.columns.get(c) for c in columns}, SOURCE_COLUMN: e.columns[SOURCE_COLUMN]}, read=e.read)
            for e in rows
        ]
    licenses = sorted({m.get("license") or "other" for _, m, _ in read_all})
    citations = [m["citation"] for _, m, _ in read_all if m.get("citation")]
    info = SourceInfo(
        name=" + ".join(names),
        license=licenses[0] if len(licenses) == 1 else "other",
        citation="\n".join(dict.fromkeys(citations)) or None,
    )
    if len(licenses) > 1:
        logger.warning("the combined datasets have different licenses (%s): the result is marked `other`; check that the terms allow combining them", ", ".join(licenses))
    return Source(info, examples, labels, tuple(attributes), (*columns, SOURCE_COLUMN), Counter(),
                  {"combined": [{"name": n, "license": m.get("license"), "rows": sum(s["num_rows"] for s in m["splits"].values())} for n, (_, m, _) in zip(names, read_all)]})
