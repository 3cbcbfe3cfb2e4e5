"""The shape every reader of `skinsynth.sources` fills in (`Example`, `Source`, `SourceInfo`) and the helpers they
share: class names, CSV tables, and finding image files under a folder the way downloads lay them out."""

from __future__ import annotations

import io
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Example:
    """One image as the source describes it. `split` is set only when the source itself fixes it (train/test folders).
    `read` returns the image's bytes when they are not a file at `path` (a row of a dataset's shard; `path` then
    only names it)."""

    path: Path
    label: str
    group_id: str
    attributes: dict[str, str | None] = field(default_factory=dict)
    columns: dict[str, str | None] = field(default_factory=dict)
    split: str | None = None
    read: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)

    def data(self) -> bytes:
        return self.read() if self.read is not None else self.path.read_bytes()


@dataclass(frozen=True)
class SourceInfo:
    """What the card and manifest say about the source: its name, license (Hub license id) and citation."""

    name: str
    license: str | None = None
    citation: str | None = None
    homepage: str | None = None


@dataclass(frozen=True)
class Source:
    """A read source. `label_names` fixes the ClassLabel order (a name with no image is left out of the dataset and
    reported as absent); `required_classes` must have images (the CSV mapping's `classes`); `attributes` and
    `columns` fix the extra columns; `reader_options` (e.g. the CSV mapping) go into the manifest so the conversion
    can be repeated."""

    info: SourceInfo
    examples: list[Example]
    label_names: list[str]
    attributes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    skipped: Counter = field(default_factory=Counter)
    reader_options: dict = field(default_factory=dict)
    required_classes: tuple[str, ...] = ()


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


def visible_files(root: Path) -> Iterator[Path]:
    """Every file under `root`, in a stable order, hidden files and folders left out. Links to folders are followed
    (a folder on a shared drive is usually pointed at by one; not following them would lose its images without a
    word), and a folder reached a second time (a link loop, or two links to one folder) is walked only once. A folder
    that cannot be read is a `DatasetError`: skipping it would lose its images without a word too."""

    def unreadable(err: OSError):
        raise DatasetError(f"cannot read the folder `{err.filename}` under `{root}` ({err.strerror or err}); fix its permissions, or move it out of the dataset folder")

    walked: set[tuple[int, int]] = set()
    for directory, folders, files in os.walk(root, onerror=unreadable, followlinks=True):
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in walked:
            folders[:] = []
            continue
        walked.add((status.st_dev, status.st_ino))
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory) / name


class FileIndex:
    """Every file under an images root, listed once (one walk, no `stat` per file), so that a table's image is
    found wherever the download unzipped it (PAD-UFES-20: `imgs_part_1/` … `imgs_part_3/`; ISIC: a nested folder).

    `find(name)` takes the name as the table writes it: a path relative to the root is used as it is; otherwise the
    file name is looked up anywhere under the root, and a name found in two places is an error naming both, since
    picking one would silently give an image the wrong label. Hidden files and folders are ignored; links to
    folders are followed (`visible_files`).
    """

    def __init__(self, root: Path):
        if not root.is_dir():
            raise DatasetError(f"images folder `{root}` does not exist or is not a folder; set `images:` in the mapping to where the images are")
        self.root = root
        self.relative: dict[str, Path] = {}
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        for path in visible_files(root):
            self.relative[path.relative_to(root).as_posix()] = path
            self.by_name[path.name].append(path)

    def find(self, name: str) -> Path | None:
        relative = PurePosixPath(name.replace("\\", "/")).as_posix()
        if relative in self.relative:
            return self.relative[relative]
        matches = self.by_name.get(PurePosixPath(relative).name, [])
        if len(matches) > 1:
            raise DatasetError(f"image `{name}` is found twice under `{self.root}`: `{matches[0]}` and `{matches[1]}`; "
                               "remove one copy, or write its path relative to the images folder in the table")
        return matches[0] if matches else None
