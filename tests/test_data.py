"""Zero-copy reads: a local dataset folder is memory-mapped in place (nothing copied into the Hugging Face cache) and
reads the same rows as `datasets.load_dataset`; a model folder's fingerprint is cached by file sizes and times."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsynth.cli import main
from skinsynth.data import open_dataset
from skinsynth.errors import DatasetError
from skinsynth.fingerprint import _hash_files, fingerprint_cache_dir, folder_fingerprint


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared real dataset of 3 classes x 8 images, with train, validation and test splits of 2 shards or more."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name in ("melanoma", "nevus", "keratosis"):
        (root / "images" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / "images" / name / f"{i}.png")
    assert main(["-q", "prepare", str(root / "images"), "--format", "imagefolder", "--out", str(root / "real"), "--shard-size", "5"]) == 0
    return root / "real"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_local_folder_is_memory_mapped_in_place(prepared, tmp_path, monkeypatch):
    import datasets

    hf_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    before = files_under(prepared)
    opened = open_dataset(prepared, required_splits=("train", "validation", "test"))
    assert list(opened) == ["train", "validation", "test"]
    assert len(opened["train"].cache_files) >= 2  # several shards, concatenated
    assert all(Path(f["filename"]).parent == prepared / "data" for part in opened.values() for f in part.cache_files)
    assert files_under(hf_cache) == []  # nothing copied
    loaded = datasets.load_dataset(str(prepared))  # the reference, which copies into hf_cache
    assert files_under(hf_cache) != []
    for split in loaded:
        assert opened[split].features == loaded[split].features
        assert opened[split]["label"][:] == loaded[split]["label"][:]
        assert [x["bytes"] for x in opened[split].cast_column("image", datasets.Image(decode=False))["image"]] == \
               [x["bytes"] for x in loaded[split].cast_column("image", datasets.Image(decode=False))["image"]]
    opened["train"].select([3, 1]).cast_column("image", datasets.Image(decode=False))[0]  # what readers do: in memory
    assert files_under(prepared) == before


def test_damaged_shard_is_one_clear_error(prepared, tmp_path):
    damaged = Path(shutil.copytree(prepared, tmp_path / "damaged"))
    shard = sorted((damaged / "data").glob("train-*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DatasetError, match="could not load dataset"):
        open_dataset(damaged)


def test_fingerprint_is_cached_by_sizes_and_times(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINSYNTH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "weights.safetensors"
    weights.write_bytes(b"a" * 1000)
    (folder / "model_index.json").write_text("{}")
    first = folder_fingerprint(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert first == _hash_files(files, [str(p.relative_to(folder)) for p in files])
    assert len(list(fingerprint_cache_dir().glob("[0-9a-f]*[0-9a-f]"))) == 1

    stat = weights.stat()  # same size and time, other bytes: the cache answers, without reading the weights
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert folder_fingerprint(folder) == first
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed again
    assert folder_fingerprint(folder) != first
    assert folder_fingerprint(tmp_path / "model" / "unet" / "weights.safetensors") == _hash_files([weights], ["weights.safetensors"])


def test_fingerprint_without_a_writable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SKINSYNTH_CACHE", str(blocker / "below-a-file"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.bin").write_bytes(b"x")
    assert folder_fingerprint(tmp_path / "m") == _hash_files([tmp_path / "m" / "x.bin"], ["x.bin"])


def test_dataset_key_names_the_content_of_the_splits_read(prepared, tmp_path):
    import json

    from skinsynth.data import dataset_key

    copy = tmp_path / "real"
    shutil.copytree(prepared, copy)
    key = dataset_key(copy, ("train",))
    assert set(key) == {"source", "shards_sha256"} and key["source"] == str(copy)
    assert dataset_key(copy, ("train", "test")) != key  # the splits read are what it names
    (copy / "README.md").write_text("a rebuilt card")  # what `benchmark --update-card` writes: not the data
    (copy / "reports").mkdir(exist_ok=True)
    (copy / "reports" / "benchmark.json").write_text("{}")
    assert dataset_key(copy, ("train",)) == key
    manifest = json.loads((copy / "prepare.json").read_text())
    manifest["splits"]["train"]["shards"][0]["sha256"] = "0" * 64  # the shard rewritten (the manifest with it)
    (copy / "prepare.json").write_text(json.dumps(manifest))
    assert dataset_key(copy, ("train",))["shards_sha256"] != key["shards_sha256"]

    # without a manifest: the fingerprint of data/, which follows the shards' bytes
    (copy / "prepare.json").unlink()
    bare = dataset_key(copy, ("train",))
    assert set(bare) == {"source", "data_fingerprint"}
    shard = sorted((copy / "data").glob("train-*.arrow"))[0]
    shutil.copyfile(sorted((copy / "data").glob("test-*.arrow"))[0], shard)
    assert dataset_key(copy, ("train",))["data_fingerprint"] != bare["data_fingerprint"]


def test_dataset_key_of_an_unresolvable_hub_id_is_one_clear_error():
    from skinsynth.data import dataset_key

    with pytest.raises(DatasetError, match="could not resolve which commit of dataset `nobody/no-such-dataset`"):
        dataset_key("nobody/no-such-dataset", ("train",))
