"""ImageFolder: one folder per class (`ROOT/melanoma/x.jpg`), optionally under split folders (`ROOT/train/melanoma/x.jpg`,
`Train/`, `test/`, `val/`, `validation/`) whose split is kept.

Class names are the folder names in snake_case. Nothing says which images show the same lesion, so every image is
its own group (its path relative to ROOT); use `--format csv` with a group column when the source knows better.
Hidden files are ignored; any other file that is not an image is counted as `not_an_image`. Links to folders (a
class kept on a shared drive) are followed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import DatasetError
from .base import IMAGE_SUFFIXES, Example, Source, SourceInfo, label_name, visible_files

SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "validation", "valid": "validation", "validation": "validation", "test": "test", "testing": "test"}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read(root: Path) -> Source:
    if not root.is_dir():
        raise DatasetError(f"`{root}` is not a folder; `--format imagefolder` reads ROOT/CLASS/IMAGE (or ROOT/train/CLASS/IMAGE)")
    top = _visible_dirs(root)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) != len(top):
        others = [d.name for d in top if d not in split_dirs]
        raise DatasetError(f"`{root}` mixes split folders ({[d.name for d in split_dirs]}) with other folders {others}; use one layout")
    class_dirs = [(SPLIT_FOLDERS[d.name.lower()], c) for d in split_dirs for c in _visible_dirs(d)] if split_dirs else [(None, c) for c in top]
    if not class_dirs:
        raise DatasetError(f"`{root}` holds no class folders; `--format imagefolder` reads ROOT/CLASS/IMAGE (or ROOT/train/CLASS/IMAGE)")

    examples, skipped = [], Counter()
    for split, class_dir in class_dirs:
        label = label_name(class_dir.name)
        for path in visible_files(class_dir):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped["not_an_image"] += 1
                continue
            examples.append(Example(path=path, label=label, group_id=path.relative_to(root).as_posix(), split=split))
    names = sorted({label_name(c.name) for _, c in class_dirs})
    return Source(SourceInfo(name=root.name), examples, names, skipped=skipped)
