"""Convert a real dataset (HAM10000, an ImageFolder, a CSV table) into the layout `generate` writes, with leak-free splits.

    read (skinsynth.sources)  ->  cap per class  ->  check + fingerprint images  ->  duplicates  ->  split by group
    ->  write shards + prepare.json (+ duplicates.json)

Images keep their original bytes unless something has to change: a mode other than RGB (greyscale, CMYK, alpha,
palette, 16-bit), a format other than JPEG/PNG/WebP, or a resize that was asked for. Only those are decoded in full
and re-encoded (JPEG sources as JPEG, others as PNG); the rest are checked with a reduced-size decode, which still
reads the whole compressed stream and so catches truncated files. Converting all 10,015 HAM10000 JPEGs this way takes
seconds, and the output is the size of the source (decoding into PIL images and letting `datasets` store them
as PNG takes over a minute and writes 8x the bytes).

Duplicates (`skinsynth.duplicates`: same pixels, or resized / re-encoded copies) are found in the check pass, which
then decodes every image at no less than 256 pixels a side for its fingerprint (large JPEGs at 1/2 to 1/8 scale),
and only the images found in a set of copies once more in full, to tell exact copies from near ones; copies share
a `group_id`, so they never straddle the splits skinsynth makes.
Copies with different labels follow `conflicts`; copies on both sides of a split the source fixed are reported
(and with `cross_split="drop-train"` removed from train). The counts go to the manifest and the card, the file
names to `duplicates.json`.

Unusable images are skipped and counted by reason (`corrupt_image`, `missing_file`, `unknown_label`…) in the manifest.
Everything is written into a hidden folder beside `out` and renamed into place at the end, so `out` either holds
a complete dataset or nothing new.

The parts: `config` (the options), `images` (check and convert), `copies` (duplicates), `output` (writing into place).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import DatasetError, SkinsynthError
from ..paths import portable_reference
from ..shards import DUPLICATES_REPORT, atomic_write_json, splits_manifest
from ..sources import Example, Source, label_name, read_source
from ..splits import assign_splits, cap_per_class
from .config import PrepareConfig, parse_size
from .copies import resolve_duplicates
from .images import Check, check_image, to_rgb
from .output import check_output, dataset_features, move_into_place, remove_leftovers, write_splits

__all__ = ["MANIFEST", "PrepareConfig", "check_image", "parse_size", "prepare", "present_classes", "split_examples", "to_rgb"]

logger = logging.getLogger(__name__)

MANIFEST = "prepare.json"


def split_examples(examples: list[Example], config: PrepareConfig) -> list[str]:
    """The split of each example: grouped and stratified; splits the source fixed (folders) are kept, the missing
    ones are carved out of its train part with their configured fractions."""
    labels = [e.label for e in examples]
    groups = [e.group_id for e in examples]
    preset = {e.split for e in examples if e.split is not None}
    if not preset:
        return assign_splits(labels, groups, config.fractions, config.seed)
    carve = {s: f for s, f in config.fractions.items() if s != "train" and s not in preset}
    fractions = {"train": 1 - sum(carve.values()), **carve}
    train = [i for i, e in enumerate(examples) if e.split in (None, "train")]
    carved = assign_splits([labels[i] for i in train], [groups[i] for i in train], fractions, config.seed)
    splits = [e.split for e in examples]
    for index, split in zip(train, carved):
        splits[index] = split
    return splits


def present_classes(data: Source, usable: list[tuple[Example, Check]], config: PrepareConfig, skipped: Counter) -> tuple[Source, list[str]]:
    """The source with only the classes that have a usable image, and the names it lost: a class list naming classes
    a subset lacks (ISIC 2019 or 2020 without its rare classes) would otherwise become ClassLabel names with zero
    images. A class required by `config.classes` or the source's own `required_classes` with no image is an error."""
    present = {example.label for example, _ in usable}
    required = [label_name(name) for name in (*(config.classes or ()), *data.required_classes)]
    missing = [name for name in dict.fromkeys(required) if name not in present]
    if missing:
        raise DatasetError(f"class(es) {', '.join(missing)} have no usable image (classes with images: {', '.join(sorted(present))}; "
                           f"skipped: {dict(skipped) or 'none'}); check the download, or leave them out of `--classes` / the mapping's `classes`")
    absent = [name for name in data.label_names if name not in present]
    if absent:
        logger.warning("classes %s have no image here: left out of the dataset (listed as absent_classes in %s)", ", ".join(absent), MANIFEST)
    return replace(data, label_names=[name for name in data.label_names if name in present]), absent


def prepare(
    source: str | Path | list,
    format: str,
    out: str | Path,
    *,
    mapping=None,
    config: PrepareConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> dict:
    """Convert the dataset at `source` (`format`: ham10000, imagefolder, csv, or skinsynth: a list of `prepare`
    outputs to combine) into `out`; return the manifest.

    Mirrors `skinsynth prepare`. `mapping` is the CSV column mapping (YAML file, dict or `sources.csv.ColumnMapping`).
    Options are `PrepareConfig` fields (`validation=0.1, test=0.1, seed=0, resize=(w, h), max_size,
    per_class_cap, shard_size, quality, workers`), or pass a `config`.
    """
    from tqdm.auto import tqdm

    from ..card import write_dataset_card
    from ..versions import library_versions

    config = replace(config or PrepareConfig(), **options) if options else (config or PrepareConfig())
    out = Path(out).expanduser()
    sources = [Path(s) for s in source] if isinstance(source, (list, tuple)) else [Path(source)]
    for one in sources:
        check_output(out, overwrite, one, format)
    remove_leftovers(out)
    started = time.perf_counter()
    data = read_source(source, format, mapping)
    skipped = Counter(data.skipped)
    examples = data.examples
    if config.per_class_cap is not None:
        kept = cap_per_class([e.label for e in examples], [e.group_id for e in examples], config.per_class_cap, config.seed)
        examples = [examples[i] for i in kept]

    config = replace(config, workers=config.workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        checks = list(tqdm(pool.map(lambda e: check_image(e, config), examples), total=len(examples), unit="img", desc="checking", disable=not progress))
        skipped.update(c.skip for c in checks if c.skip)
        converted = Counter(c.convert for c in checks if c.convert)
        usable = [(e, c) for e, c in zip(examples, checks) if c.skip is None]
        duplicates, entries = None, []
        if config.dedup and usable:
            root = Path(os.path.commonpath([s.expanduser().absolute() for s in sources])) if len(sources) > 1 else sources[0].expanduser().absolute()
            usable, duplicates, entries, dropped = resolve_duplicates(usable, config, root if root.is_dir() else root.parent, pool)
            skipped.update(dropped)
        if not usable:
            raise SkinsynthError(f"no usable image in `{source}` (skipped: {dict(skipped) or 'none found'})")
        data, absent = present_classes(data, usable, config, skipped)
        splits = split_examples([e for e, _ in usable], config)

        tmp = out.with_name(f".{out.name}.prepare-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            infos, class_counts = write_splits(tmp, data, usable, splits, config, pool, progress)
            manifest = {
                "kind": "real",
                "status": "complete",
                "source": {"name": data.info.name, "homepage": data.info.homepage, "format": format, "path": portable_reference(sources[0], out) if len(sources) == 1 else [portable_reference(s, out) for s in sources],
                           "num_examples": len(data.examples) + sum(data.skipped.values()), **data.reader_options},
                "license": data.info.license,
                "citation": data.info.citation,
                "label_names": data.label_names,
                "absent_classes": absent,
                "attributes": list(data.attributes),
                "source_columns": list(data.columns),
                "config": asdict(config),
                "splits": splits_manifest(infos),
                "class_counts": class_counts,
                "skipped": dict(sorted(skipped.items())),
                "converted": dict(sorted(converted.items())),
                "duplicates": duplicates,
                "features": dataset_features(data).to_dict(),
                "library_versions": library_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.perf_counter() - started, 3),
            }
            if duplicates is not None:
                atomic_write_json(tmp / DUPLICATES_REPORT, {"method": duplicates["method"], "clusters": entries})
            atomic_write_json(tmp / MANIFEST, manifest)
            move_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    write_dataset_card(out)
    logger.info("prepared %s in %.1f s", out, manifest["seconds"])
    return manifest
