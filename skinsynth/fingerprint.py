"""What names a local model or dataset folder in every record: a sha256 of its files, cached so a multi-GB folder is
hashed once, not on every launch and in every rank."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def folder_fingerprint(path: str | Path) -> str:
    """sha256 over every file's relative path and content (hidden files skipped): two folders with the same
    weights and configs have the same fingerprint, wherever they live.

    Hashing a multi-GB model folder takes a minute, on every launch and in every rank: the result is cached under
    `fingerprint_cache_dir()`, keyed by the folder's path and every file's size and modification time, so it is
    computed again only when a file changes. Ranks that start together wait for the first one's result."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    names = [str(file.relative_to(path) if path.is_dir() else file.name) for file in files]
    listing = [(name, file.stat().st_size, file.stat().st_mtime_ns) for name, file in zip(names, files)]
    key = hashlib.sha256(json.dumps([str(path), listing]).encode()).hexdigest()
    cache = fingerprint_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        lock = FileLock(str(cache / f"{key}.lock"))
        lock.acquire(timeout=3600)
    except OSError:  # an unwritable cache only costs time
        return _hash_files(files, names)
    try:
        entry = cache / key
        if entry.is_file():
            return entry.read_text().strip()
        digest = _hash_files(files, names)
        from .shards import atomic_write_text

        atomic_write_text(entry, digest + "\n")
        return digest
    finally:
        lock.release()


def fingerprint_cache_dir() -> Path:
    """`$SKINSYNTH_CACHE/fingerprints`, by default under `$XDG_CACHE_HOME` (`~/.cache/skinsynth/fingerprints`)."""
    root = os.environ.get("SKINSYNTH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skinsynth"
    return Path(root) / "fingerprints"


def _hash_files(files: list[Path], names: list[str]) -> str:
    digest = hashlib.sha256()
    for file, name in zip(files, names):
        digest.update(name.encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
