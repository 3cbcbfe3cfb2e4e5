"""Paths read from files (a manifest's shard list, a column mapping, a CSV row) stay inside the folder they belong to.

A manifest naming `../elsewhere.arrow`, or a CSV row naming `/etc/passwd`, must not make `verify` check, `push`
upload or `prepare` copy a file from outside the dataset. The check is lexical (absolute paths and `..` that climb
out are refused) so that a folder the user deliberately linked in, such as `images -> /mnt/big/images`, still works.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DatasetError


def inside(root: str | Path, relative: str | Path, what: str) -> Path:
    """`root / relative` if it stays inside `root`; else a `DatasetError` naming `what` (where the path was read)."""
    path = Path(relative)
    if path.is_absolute() or path.drive or not str(relative).strip():
        raise DatasetError(f"{what} names `{relative}`, which is not a path relative to `{root}`; paths must stay inside it")
    normal = os.path.normpath(path)
    if normal == ".." or normal.startswith(".." + os.sep):
        raise DatasetError(f"{what} names `{relative}`, which points outside `{root}`; paths must stay inside it")
    return Path(root) / normal
