"""Where `prepare` writes: refuse to clobber, write every split beside `out` while images are converted, and rename
into place at the end, so `out` holds a complete dataset or nothing new (leftovers of a killed run are removed)."""

from __future__ import annotations

import glob
import logging
import os
import shutil
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DatasetError, OutputError
from ..shards import ShardInfo, ShardWriter, shard_file, shard_ranges
from ..sources import Example, Source
from ..splits import SPLITS
from .config import PrepareConfig
from .images import Check, image_bytes

logger = logging.getLogger(__name__)


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


def ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """`pool.map(fn, items)` in order, with at most `ahead` results in flight (bounded memory for image bytes)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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


def move_into_place(tmp: Path, out: Path) -> None:
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
