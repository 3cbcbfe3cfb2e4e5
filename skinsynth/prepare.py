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
then decodes every image in full; they share a `group_id`, so they never straddle the splits skinsynth makes.
Copies with different labels follow `conflicts`; copies on both sides of a split the source fixed are reported
(and with `cross_split="drop-train"` removed from train). The counts go to the manifest and the card, the file
names to `duplicates.json`.

Unusable images are skipped and counted by reason (`corrupt_image`, `missing_file`, `unknown_label`…) in the manifest.
Everything is written into a hidden folder beside `out` and renamed into place at the end, so `out` either holds
a complete dataset or nothing new.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import duplicates as dup
from .errors import DatasetError, OutputError, SkinsynthError
from .paths import portable_reference
from .shards import ShardInfo, ShardWriter, atomic_write_json, shard_file, shard_ranges, splits_manifest
from .sources import Example, Source, read_source
from .splits import SPLITS, assign_splits, cap_per_class

logger = logging.getLogger(__name__)

MANIFEST = "prepare.json"
DUPLICATES_REPORT = "duplicates.json"
KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
# Why an image in this mode is re-encoded (the reason is counted under "converted" in the manifest).
CONVERSIONS = {"L": "greyscale", "LA": "greyscale", "1": "greyscale", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "16-bit",
               "F": "16-bit", "CMYK": "cmyk", "RGBA": "alpha", "RGBa": "alpha", "PA": "alpha", "P": "palette", "YCbCr": "colour_space",
               "LAB": "colour_space", "HSV": "colour_space"}


@dataclass(frozen=True)
class PrepareConfig:
    """How to convert: split fractions and seed, an optional resize and per-class cap, and the shard size.

    `validation` and `test` are fractions of the whole dataset (train gets the rest). When the source fixes some
    splits itself (ImageFolder train/test folders), those are kept and the missing ones are carved out of train.
    `resize` is an exact (width, height); `max_size` bounds the longer side and keeps the aspect ratio.
    `dedup` finds exact and near copies (see `skinsynth.duplicates`); `conflicts` says what becomes of copies with
    different labels (`drop`: all of them, the default, since the source contradicts itself; `majority`: keep those
    with the strictly most common label; `keep`: keep all, only count them); `cross_split` what becomes of copies
    on both sides of a split the source fixed (`report`, the default, or `drop-train`: remove the train side).
    """

    validation: float = 0.1
    test: float = 0.1
    seed: int = 0
    resize: tuple[int, int] | None = None
    max_size: int | None = None
    per_class_cap: int | None = None
    shard_size: int = 1000
    quality: int = 95
    workers: int | None = None
    dedup: bool = True
    conflicts: str = "drop"
    cross_split: str = "report"

    def __post_init__(self):
        if self.conflicts not in dup.CONFLICT_POLICIES:
            raise SkinsynthError(f"`--conflicts` must be one of {', '.join(dup.CONFLICT_POLICIES)}, got {self.conflicts!r}")
        if self.cross_split not in dup.CROSS_SPLIT_POLICIES:
            raise SkinsynthError(f"`--cross-split` must be one of {', '.join(dup.CROSS_SPLIT_POLICIES)}, got {self.cross_split!r}")
        for name in ("validation", "test"):
            if not 0 <= getattr(self, name) < 1:
                raise SkinsynthError(f"`--{name}` must be a fraction in [0, 1), got {getattr(self, name)}")
        if self.validation + self.test >= 1:
            raise SkinsynthError(f"`--validation` + `--test` must leave something for train, got {self.validation} + {self.test}")
        if self.resize is not None and self.max_size is not None:
            raise SkinsynthError("give `--resize` or `--max-size`, not both")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            raise SkinsynthError(f"`--resize` must be WIDTHxHEIGHT with positive sides, got {self.resize}")
        for name, low in (("max_size", 1), ("per_class_cap", 1), ("shard_size", 1), ("quality", 1), ("workers", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise SkinsynthError(f"`--{name.replace('_', '-')}` must be at least {low}, got {value}")
        if self.quality > 100:
            raise SkinsynthError(f"`--quality` must be at most 100, got {self.quality}")

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": 1 - self.validation - self.test, "validation": self.validation, "test": self.test}

    def target_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The output size of an image of `size`, or None when it stays as it is."""
        if self.resize is not None:
            return None if tuple(self.resize) == size else tuple(self.resize)
        if self.max_size is not None and max(size) > self.max_size:
            scale = self.max_size / max(size)
            return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
        return None


def parse_size(text: str) -> tuple[int, int]:
    """`512x384` -> (512, 384); `512` -> (512, 512)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise SkinsynthError(f"`--resize` must look like 512x384 (width x height) or 512, got {text!r}")
    return parts[0], parts[1]


# ---------------------------------------------------------------------------------------------------------------
# Images: check cheaply, convert only what must change.


def _rotated(image) -> bool:
    """Whether the EXIF orientation turns the image by 90 degrees (phone photos): its upright size is swapped."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


@dataclass(frozen=True)
class Check:
    """What pass one learnt about an image: why to skip it, or why (if at all) it must be re-encoded."""

    skip: str | None = None
    convert: str | None = None
    fingerprint: dup.Fingerprint | None = None


def check_image(example: Example, config: PrepareConfig) -> Check:
    """Open the example's image, read its header and decode it to prove it is whole: in full and fingerprinted with `dedup`,
    else at reduced size (JPEG: 1/8 scale)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        data = example.data()
    except FileNotFoundError:
        return Check(skip="missing_file")
    except OSError:
        return Check(skip="unreadable_file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode, fmt, size = image.mode, image.format, image.size[::-1] if _rotated(image) else image.size
            if config.dedup:
                image.load()
                fingerprint = dup.fingerprint(to_rgb(ImageOps.exif_transpose(image)))
            else:
                image.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
                fingerprint = None
    except UnidentifiedImageError:
        return Check(skip="not_an_image")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return Check(skip="corrupt_image")
    if fmt == "PNG" and len(data) > 24 and data[24] > 8:  # IHDR bit depth; Pillow opens 16-bit RGB PNGs as 8-bit RGB
        return Check(convert="16-bit", fingerprint=fingerprint)
    if mode != "RGB":
        return Check(convert=CONVERSIONS.get(mode, "colour_space"), fingerprint=fingerprint)
    if fmt not in KEPT_FORMATS:
        return Check(convert="format", fingerprint=fingerprint)
    if config.target_size(size) is not None:
        return Check(convert="resize", fingerprint=fingerprint)
    return Check(fingerprint=fingerprint)


def to_rgb(image):
    """An RGB copy of `image`: alpha composited on white, 16-bit and float scaled down (not clipped) to 8 bits."""
    import numpy as np
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" or pixels.max() > 1 else 1.0
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_bytes(example: Example, check: Check, config: PrepareConfig) -> tuple[bytes, str]:
    """The bytes to store and the file name to record: the original file when nothing must change, else an RGB
    (and, if asked, resized) re-encoding, JPEG for JPEG sources and PNG for the rest. A re-encoded image is turned
    upright first (the EXIF orientation is not carried over; `datasets` applies it when decoding kept bytes)."""
    from PIL import Image, ImageOps

    data, path = example.data(), example.path
    if check.convert is None:
        return data, path.name
    with Image.open(io.BytesIO(data)) as image:
        source_format, rotated = image.format, _rotated(image)
        size = config.target_size(image.size[::-1] if rotated else image.size)
        if size is not None and source_format == "JPEG":
            image.draft("RGB", size[::-1] if rotated else size)  # decode at the smallest DCT scale still >= `size`: much faster
        image = to_rgb(ImageOps.exif_transpose(image))
        if size is not None:
            image = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if source_format == "JPEG":
            image.save(out, format="JPEG", quality=config.quality)
            return out.getvalue(), f"{path.stem}.jpg"
        image.save(out, format="PNG")
        return out.getvalue(), f"{path.stem}.png"


def ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """`pool.map(fn, items)` in order, with at most `ahead` results in flight (bounded memory for image bytes)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# ---------------------------------------------------------------------------------------------------------------
# Duplicates: group them, settle conflicting labels, report copies across the source's own splits.


def _file_name(path: Path, root: Path) -> str:
    path = path.absolute()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def resolve_duplicates(usable: list[tuple[Example, Check]], config: PrepareConfig, root: Path) -> tuple[list[tuple[Example, Check]], dict, list[dict], Counter]:
    """Find the duplicate clusters among the usable images and apply the config's policies. Returns the images kept
    (copies now share one `group_id`), the counts for the manifest, one report entry per cluster (file names
    relative to `root`) and the images dropped, by reason."""
    examples = [e for e, _ in usable]
    found = dup.clusters(len(usable), dup.duplicate_pairs([c.fingerprint for _, c in usable]))
    preset = any(e.split is not None for e in examples)
    keep = [True] * len(usable)
    dropped: Counter = Counter()
    counts: Counter = Counter()
    entries = []
    for members in found:
        labels = [examples[i].label for i in members]
        entry = {"kind": "exact" if len({usable[i][1].fingerprint.pixels for i in members}) == 1 else "near",
                 "files": [_file_name(examples[i].path, root) for i in members], "labels": labels,
                 "groups": [examples[i].group_id for i in members]}
        counts["across_groups"] += len(set(entry["groups"])) > 1
        if len(set(labels)) > 1:
            counts["conflicting_clusters"] += 1
            counts["conflicting_images"] += len(members)
            for i, kept in zip(members, dup.conflict_keep(labels, config.conflicts)):
                if not kept:
                    keep[i] = False
                    dropped["conflicting_label"] += 1
        if preset:
            entry["splits"] = [examples[i].split or "train" for i in members]
            sides = {split for i, split in zip(members, entry["splits"]) if keep[i]}
            if len(sides) > 1:
                counts["cross_split_clusters"] += 1
                counts["cross_split_images"] += len(members)
                if config.cross_split == "drop-train":
                    for i, split in zip(members, entry["splits"]):
                        if keep[i] and split == "train":
                            keep[i] = False
                            dropped["duplicate_across_splits"] += 1
        entry["dropped"] = [name for i, name in zip(members, entry["files"]) if not keep[i]]
        entries.append(entry)

    exact = Counter(c.fingerprint.pixels for _, c in usable)
    in_clusters = sum(len(m) for m in found)
    summary = {
        "method": {"exact": "SHA-256 of the decoded RGB pixels",
                   "near": f"64-bit DCT pHash within {dup.PHASH_DISTANCE} bits and 32x32 grey thumbnails within {dup.THUMBNAIL_DIFFERENCE} grey levels"},
        "clusters": len(found),
        "images": in_clusters,
        "exact_copies": sum(n - 1 for n in exact.values()),
        "near_copies": in_clusters - len(found) - sum(n - 1 for n in exact.values()),
        "across_groups": counts["across_groups"],
        "conflicting": {"clusters": counts["conflicting_clusters"], "images": counts["conflicting_images"], "policy": config.conflicts,
                        "dropped": dropped["conflicting_label"]},
        "cross_split": {"clusters": counts["cross_split_clusters"], "images": counts["cross_split_images"], "policy": config.cross_split,
                        "removed_from_train": dropped["duplicate_across_splits"]},
        "report": DUPLICATES_REPORT,
    }
    if summary["conflicting"]["clusters"]:
        logger.warning("%d images are copies of one another with different labels (%d sets); --conflicts %s dropped %d of them",
                       summary["conflicting"]["images"], summary["conflicting"]["clusters"], config.conflicts, summary["conflicting"]["dropped"])
    if summary["cross_split"]["clusters"]:
        logger.warning("WARNING: %d sets of copies (%d images) sit in more than one of the splits the source fixed%s; see %s",
                       summary["cross_split"]["clusters"], summary["cross_split"]["images"],
                       f": {dropped['duplicate_across_splits']} removed from train" if config.cross_split == "drop-train"
                       else ": evaluation on them measures memory (`--cross-split drop-train` removes the train side)", DUPLICATES_REPORT)
    mapping = dup.merged_groups([e.group_id for e in examples], [[i for i in m if keep[i]] for m in found])
    kept = [(replace(e, group_id=mapping.get(e.group_id, e.group_id)), c) for (e, c), k in zip(usable, keep) if k]
    return kept, summary, entries, dropped


# ---------------------------------------------------------------------------------------------------------------
# Splits and features.


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


def dataset_features(source: Source):
    """The columns of a real dataset: image, label, group, attributes (like recipe attributes) and source columns."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=source.label_names),
            "group_id": datasets.Value("string"),
            **{name: datasets.Value("string") for name in (*source.attributes, *source.columns)},
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Output folder: refuse to clobber, write beside, rename into place.


def check_output(out: Path, overwrite: bool, source: Path, format: str) -> None:
    source, resolved = source.expanduser().resolve(), out.resolve()
    if source == resolved or source.is_relative_to(resolved):
        raise OutputError(f"`--out {out}` holds the source `{source}`; write the dataset somewhere else")
    if format == "imagefolder" and resolved.is_relative_to(source):
        raise OutputError(f"`--out {out}` is inside the ImageFolder `{source}`, where it would be read as a class; write it elsewhere")
    if out.exists() and not out.is_dir():
        raise OutputError(f"`--out {out}` is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"`{out}` exists and is not empty; choose another --out or pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create `{out.parent}`: {err.strerror or err}") from None
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"`{out.parent}` is not writable")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(out: Path) -> None:
    """Remove what an interrupted `prepare` into `out` left beside it (`kill -9`, a power cut): the hidden temporary
    folders `.OUT.prepare-PID` and `.OUT.replaced-PID` of processes that are no longer running."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        stem, _, pid = path.name.rpartition("-")
        if stem in (f".{out.name}.prepare", f".{out.name}.replaced") and pid.isdigit() and not _running(int(pid)):
            logger.info("removing %s, left by an interrupted prepare", path)
            shutil.rmtree(path, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _write_split(root: Path, split: str, rows: Iterable[dict], num_rows: int, features, shard_size: int) -> list[ShardInfo]:
    """`shards.write_split` for a stream: rows are produced (read, converted) while earlier ones are written."""
    rows = iter(rows)
    ranges = shard_ranges(num_rows, shard_size)
    infos = []
    for index, (start, stop) in enumerate(ranges):
        with ShardWriter(root, shard_file(split, index, len(ranges)), features) as writer:
            for _ in range(start, stop):
                writer.write(next(rows))
        infos.append(writer.info)
    return infos


def write_splits(root: Path, data: Source, usable: list[tuple[Example, Check]], splits: list[str], config: PrepareConfig, pool, progress: bool):
    """Write every split's shards under `root`, converting images in `pool` while earlier rows are written.
    Returns the shard infos and the images per class of each split."""
    from tqdm.auto import tqdm

    features = dataset_features(data)
    label_index = {name: i for i, name in enumerate(data.label_names)}

    def row(item: tuple[Example, Check]) -> dict:
        example, check = item
        try:
            content, name = image_bytes(example, check, config)
        except OSError as err:
            raise DatasetError(f"`{example.path}` passed the check but could not be converted (did it change meanwhile?): {err}") from err
        return {"image": {"bytes": content, "path": name}, "label": label_index[example.label], "group_id": example.group_id,
                **example.attributes, **example.columns}

    def counted(rows: Iterable[dict], bar) -> Iterator[dict]:
        for one in rows:
            bar.update()
            yield one

    infos: dict[str, list[ShardInfo]] = {}
    class_counts: dict[str, dict[str, int]] = {}
    with tqdm(total=len(usable), unit="img", desc="writing", disable=not progress) as bar:
        for split in SPLITS:
            items = [item for item, s in zip(usable, splits) if s == split]
            rows = counted(ordered_map(pool, row, items, ahead=4 * config.workers), bar)
            infos[split] = _write_split(root, split, rows, len(items), features, config.shard_size)
            counts = Counter(e.label for e, _ in items)
            class_counts[split] = {name: counts[name] for name in data.label_names}
    return infos, class_counts


# ---------------------------------------------------------------------------------------------------------------


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

    from .card import write_dataset_card
    from .generate import library_versions

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
            usable, duplicates, entries, dropped = resolve_duplicates(usable, config, root if root.is_dir() else root.parent)
            skipped.update(dropped)
        if not usable:
            raise SkinsynthError(f"no usable image in `{source}` (skipped: {dict(skipped) or 'none found'})")
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
            _move_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    write_dataset_card(out)
    logger.info("prepared %s in %.1f s", out, manifest["seconds"])
    return manifest
