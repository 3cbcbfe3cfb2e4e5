"""What a command's output folder would publish: the files an upload sends, pickles among them, and local paths
written into any of them (text, JSON, safetensors headers, Arrow schemas, PNG text chunks)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

PICKLE_SUFFIXES = {".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt"}


def uploaded_files(folder: Path) -> list[str]:
    """The files `hf upload FOLDER` and `HfApi.upload_folder(folder_path=FOLDER)` send by default: every file,
    filtered by huggingface_hub's own default ignore patterns."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(names, ignore_patterns=DEFAULT_IGNORE_PATTERNS))


def is_pickle(path: Path) -> bool:
    """A pickle by name, by its first byte (protocol 2+), or a torch.save zip archive holding one."""
    if path.suffix in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":
        return True
    if head == b"PK" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".pkl") for name in archive.namelist())
    return False


def strings_of(path: Path) -> str:
    """The text a reader of `path` sees: the whole file when it is text, else the metadata of its binary format."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        length = int.from_bytes(data[:8], "little")
        return json.dumps(json.loads(data[8 : 8 + length]).get("__metadata__", {}))
    if path.suffix == ".arrow":
        import pyarrow as pa

        schema = pa.ipc.open_stream(pa.memory_map(str(path))).schema
        return str(schema) + json.dumps({k.decode(errors="replace"): v.decode(errors="replace") for k, v in (schema.metadata or {}).items()})
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(path).metadata or {}
        return json.dumps({k.decode(errors="replace"): v.decode(errors="replace") for k, v in metadata.items()})
    if path.suffix in (".png", ".jpg", ".jpeg", ".webp"):
        from PIL import Image

        with Image.open(path) as image:
            return json.dumps({str(k): str(v) for k, v in image.info.items()})
    return data.decode("utf-8", errors="replace")


def local_paths_in(folder: Path, roots: list[str | Path]) -> dict[str, str]:
    """{file: root} for every file under `folder` whose content (or format metadata) names one of `roots`."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = strings_of(path)
        for root in map(str, roots):
            if root in text or json.dumps(root)[1:-1] in text:
                found[str(path.relative_to(folder))] = root
    return found
