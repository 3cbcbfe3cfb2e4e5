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


def portable_reference(value: str | Path | None, relative_to: str | Path) -> str | None:
    """How a file written into the folder `relative_to` names a model or dataset given as `value`: a Hub id as
    given; a local path relative to that folder (`../real`), so that nothing written carries this machine's
    absolute paths (user names, mount points) and folders that travel together still find each other. None when no
    relative path exists (another drive)."""
    if value is None:
        return None
    text = str(value)
    local = Path(text).expanduser()
    if not local.exists() and not text.startswith((".", "/", "~")):
        return text  # a Hub id
    try:
        return Path(os.path.relpath(os.path.abspath(local), os.path.abspath(relative_to))).as_posix()
    except ValueError:
        return None


def moved_reference(value: str | None, written_in: str | Path, moved_to: str | Path) -> str | None:
    """A reference that a file in `written_in` gives (`portable_reference`), as a copy of that file in `moved_to`
    must give it: local paths rebased, Hub ids and paths that do not resolve kept as they are."""
    if not value or not (Path(written_in) / value).exists():
        return value
    return portable_reference(os.path.normpath(Path(written_in) / value), moved_to)


def model_record_paths(record: dict, convert) -> dict:
    """A generation manifest's `model` record with `convert` applied to its local paths (model, LoRA, embeddings)."""
    if not record:
        return record
    lora = record.get("lora")
    return {**record, "model": convert(record.get("model")), "lora": lora and {**lora, "path": convert(lora.get("path"))},
            "embeddings": [{**e, "path": convert(e.get("path"))} for e in record.get("embeddings") or []]}


def resolved_from(folder: str | Path):
    """A `convert` for `model_record_paths`: a path written relative to `folder` (as `generate` records them) as a
    path from here; Hub ids and paths that do not exist there are kept."""
    folder = Path(folder).expanduser()

    def convert(value):
        return os.path.normpath(folder / value) if value and (folder / value).exists() else value

    return convert
