"""Arrow shards in the Hugging Face Hub layout, written so that a crash never leaves a file that looks complete.

Layout of every dataset skinsynth writes (synthetic from `generate`, real from `prepare`)::

    OUT/
      README.md                              dataset card
      data/{split}-{i:05d}-of-{n:05d}.arrow  shards, read as-is by `datasets.load_dataset(OUT)` and the Hub
      generation.json | prepare.json         manifest: how the data was made, each shard's rows and sha256

A shard is written under a hidden temporary name, fsynced and renamed into place when complete. Its
`ShardInfo` (rows, bytes, sha256) is what manifests record and what `verify` checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatasetError

if TYPE_CHECKING:  # imported where used: reading a manifest must not load `datasets` (seconds)
    import datasets
    from datasets.arrow_writer import ArrowWriter

DATA_DIR = "data"
MANIFEST_FILES = ("generation.json", "prepare.json")  # synthetic, real
DUPLICATES_REPORT = "duplicates.json"  # `prepare`'s near-duplicate clusters, published beside the manifest


def shard_file(split: str, index: int, num_shards: int) -> str:
    """The shard's path relative to the dataset root, as the Hub and `load_dataset` expect it."""
    return f"{DATA_DIR}/{split}-{index:05d}-of-{num_shards:05d}.arrow"


def shard_ranges(num_rows: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges of consecutive shards; an empty split still gets one (empty) shard so that it exists."""
    return [(start, min(start + shard_size, num_rows)) for start in range(0, max(num_rows, 1), shard_size)]


@dataclass(frozen=True)
class ShardInfo:
    file: str
    num_rows: int
    num_bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class ShardWriter:
    """Write rows of known `features` to one Arrow shard; the file appears under its real name only once complete.

    Rows are encoded with `features.encode_example` (images given as `{"bytes": …, "path": name}` keep their
    bytes untouched) and flushed every `writer_batch_size` rows, so memory does not grow with the shard.

        with ShardWriter(root, "data/train-00000-of-00004.arrow", features) as writer:
            writer.write(row)
        info = writer.info
    """

    def __init__(self, root: str | Path, file: str, features: datasets.Features, writer_batch_size: int = 16):
        self.root = Path(root)
        self.file = file
        self.features = features
        self.path = self.root / file
        self.tmp_path = self.path.with_name(f".{self.path.name}.tmp")
        self.writer_batch_size = writer_batch_size
        self.info: ShardInfo | None = None
        self._writer: ArrowWriter | None = None
        import datasets

        self._image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]

    def __enter__(self) -> ShardWriter:
        from datasets.arrow_writer import ArrowWriter

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ArrowWriter(features=self.features, path=str(self.tmp_path), writer_batch_size=self.writer_batch_size)
        return self

    def write(self, row: dict) -> None:
        # `datasets.Image.encode_example` drops the bytes of {"bytes", "path"} when `path` happens to name a file in
        # the working directory (one stat per row, too): images given with their bytes are stored exactly as given.
        given = {k: row[k] for k in self._image_columns if isinstance(row.get(k), dict) and row[k].get("bytes") is not None}
        encoded = self.features.encode_example({**row, **dict.fromkeys(given)})
        encoded.update({k: {"bytes": v["bytes"], "path": v.get("path")} for k, v in given.items()})
        self._writer.write(encoded)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._writer.close()
            self.tmp_path.unlink(missing_ok=True)
            return
        num_rows, _ = self._writer.finalize()
        self._writer.close()
        _fsync(self.tmp_path)
        digest = sha256_file(self.tmp_path)
        os.replace(self.tmp_path, self.path)
        self.info = ShardInfo(self.file, num_rows, self.path.stat().st_size, digest)


def read_manifest(root: str | Path) -> tuple[str, dict]:
    """The manifest of a skinsynth dataset folder: (file name, content). Raises `DatasetError` if there is none."""
    root = Path(root)
    for name in MANIFEST_FILES:
        path = root / name
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DatasetError(f"{path} cannot be read: {err}") from None
            _check_manifest_shape(path, manifest)
            return name, manifest
    raise DatasetError(f"{root} holds no skinsynth manifest ({' or '.join(MANIFEST_FILES)}): is it the output of `skinsynth generate` or `skinsynth prepare`?")


def _check_manifest_shape(path: Path, manifest) -> None:
    """Refuse valid JSON of the wrong shape (`[]`, a split without `num_rows`…) before a reader trips over it: the
    parts every reader relies on are a mapping, its `splits` (when present) a mapping of split to `num_rows`,
    `num_bytes` and a list of `shards`, each with its `file`, `num_rows`, `num_bytes` and `sha256`."""

    def refuse(what: str) -> None:
        raise DatasetError(f"{path} is damaged: {what}; rebuild the dataset with the command that made it")

    if not isinstance(manifest, dict):
        refuse(f"it holds a JSON {type(manifest).__name__}, not an object")
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        refuse("`splits` is not an object")
    fields = {"num_rows": int, "num_bytes": int, "shards": list}
    shard_fields = {"file": str, "num_rows": int, "num_bytes": int, "sha256": str}
    for split, info in splits.items():
        for key, kind in fields.items():
            if not isinstance(info, dict) or not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
                refuse(f"split `{split[:64]}` has no {kind.__name__} `{key}`")
        for number, shard in enumerate(info["shards"]):
            for key, kind in shard_fields.items():
                if not isinstance(shard, dict) or not isinstance(shard.get(key), kind) or isinstance(shard.get(key), bool):
                    refuse(f"shard {number} of split `{split[:64]}` has no {kind.__name__} `{key}`")


def write_split(root: str | Path, split: str, rows, features: datasets.Features, shard_size: int) -> list[ShardInfo]:
    """Write a sized sequence of rows as the split's shards (`data/{split}-…-of-…arrow`) and return their infos.

    For readers of whole datasets (`prepare`, `filter`): `generate` writes shard by shard itself, to resume.
    """
    ranges = shard_ranges(len(rows), shard_size)
    infos = []
    for index, (start, stop) in enumerate(ranges):
        with ShardWriter(root, shard_file(split, index, len(ranges)), features) as writer:
            for i in range(start, stop):
                writer.write(rows[i])
        infos.append(writer.info)
    return infos


def splits_manifest(infos: dict[str, list[ShardInfo]]) -> dict:
    """The `splits` section of a manifest: per split, its row and byte counts and each shard's info."""
    return {
        split: {"num_rows": sum(i.num_rows for i in shards), "num_bytes": sum(i.num_bytes for i in shards), "shards": [i.to_dict() for i in shards]}
        for split, shards in infos.items()
    }
