"""Check that a dataset folder is exactly what its manifest says: complete, carded, every shard present, intact, alone,
and inside the folder (a manifest naming `../elsewhere.arrow` is refused, so `push` never uploads a file from outside).

`push` runs these checks before uploading anything, so the Hub never receives a half-written or damaged dataset;
`skinsynth verify OUT` runs them on their own. Cheap checks (presence, size, row count from the Arrow stream's
batch headers) come first for every shard, so a missing file is reported without hashing gigabytes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .card import CARD_FILE, GRID_FILE
from .errors import DatasetError
from .paths import inside
from .shards import DATA_DIR, read_manifest, sha256_file


@dataclass(frozen=True)
class VerifiedDataset:
    """What a successful check found: the manifest's name and content, and rows per split."""

    manifest_name: str
    manifest: dict
    num_rows: dict[str, int]

    @property
    def shards(self) -> list[dict]:
        return [shard for split in self.manifest["splits"].values() for shard in split["shards"]]


def arrow_num_rows(path: str | Path) -> int:
    """Rows of an Arrow stream file, summed over its record batches (memory-mapped: no column is read)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        return sum(batch.num_rows for batch in reader)


def _check_shard(root: Path, shard: dict, where: str) -> None:
    name = shard["file"]
    path = inside(root, name, where)
    if name != f"{DATA_DIR}/{path.name}":
        raise DatasetError(f"{where} names `{name}`, which is not in {DATA_DIR}/ where loaders look for shards: the manifest is damaged")
    if not path.is_file():
        raise DatasetError(f"shard `{name}` is missing from {root}; finish or rerun the command that wrote the dataset")
    size = path.stat().st_size
    if size != shard["num_bytes"]:
        raise DatasetError(f"shard `{name}` has {size} bytes, the manifest says {shard['num_bytes']}: the file is damaged or was replaced")
    try:
        rows = arrow_num_rows(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a truncated or foreign file
        raise DatasetError(f"shard `{name}` is not a readable Arrow stream: {err}") from err
    if rows != shard["num_rows"]:
        raise DatasetError(f"shard `{name}` has {rows} rows, the manifest says {shard['num_rows']}: the file is damaged or was replaced")


def verify_dataset(root: str | Path, *, progress: bool = False) -> VerifiedDataset:
    """Check `root` against its manifest (`generation.json` or `prepare.json`); raise `DatasetError` naming the
    first shard that is missing, damaged or unexpected. Mirrors `skinsynth verify`."""
    from tqdm.auto import tqdm

    root = Path(root)
    manifest_name, manifest = read_manifest(root)
    status = manifest.get("status", "complete")
    if status != "complete" or not manifest.get("splits"):
        raise DatasetError(f"{root / manifest_name} says the dataset is {status if status != 'complete' else 'empty'}: run the same `skinsynth generate` command again to finish it")
    for name, what in ((CARD_FILE, "dataset card"), (GRID_FILE, "sample grid")):
        if not (root / name).is_file():
            raise DatasetError(f"the {what} `{name}` is missing from {root}: run the same command again to finish the dataset, or `skinsynth card {root}`")
    listed = set()
    for split, info in manifest["splits"].items():
        shards = info.get("shards", [])
        if sum(shard["num_rows"] for shard in shards) != info["num_rows"]:
            raise DatasetError(f"{manifest_name}: split `{split}` lists shards whose rows do not add up to its num_rows ({info['num_rows']})")
        for shard in shards:
            _check_shard(root, shard, f"{manifest_name} (split `{split}`)")
            listed.add(shard["file"])
    # `load_dataset` reads every data/{split}-* file: one the manifest does not list would add rows nobody checked.
    for path in sorted((root / DATA_DIR).iterdir()) if (root / DATA_DIR).is_dir() else []:
        relative = f"{DATA_DIR}/{path.name}"
        if not path.name.startswith(".") and relative not in listed:
            raise DatasetError(f"`{relative}` is not in {manifest_name}: remove it, or rebuild the dataset, so that loaders do not pick it up")
    verified = VerifiedDataset(manifest_name, manifest, {split: info["num_rows"] for split, info in manifest["splits"].items()})
    for shard in tqdm(verified.shards, desc="checking sha256", unit="shard", disable=not progress):
        digest = sha256_file(root / shard["file"])
        if digest != shard["sha256"]:
            raise DatasetError(f"shard `{shard['file']}` has sha256 {digest}, the manifest says {shard['sha256']}: the file is damaged or was replaced")
    return verified
