"""Shared fixtures: the tiny offline pipeline, the HAM10000 copy in ../shared, and small datasets built on the fly.

Everything runs offline (HF_HUB_OFFLINE=1) on the CPU.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
HAM10000 = Path(os.environ.get("SKINSYNTH_HAM10000", REPO.parent / "shared" / "data" / "ham10000"))
DEMO_RECIPE = REPO / "examples" / "demo.yaml"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and two threads contending for the test machine's two busy
    cores can run a step many times slower. Modules that train opt in with `pytestmark`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline on disk (64 px), built once per test session."""
    from skinsynth.tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("tiny") / "pipeline"
    tiny_pipeline(path)
    return path


@pytest.fixture(scope="session")
def ham10000_dir() -> Path:
    """The real HAM10000 images and metadata.csv in ../shared (read-only); tests that need them skip without it."""
    if not (HAM10000 / "metadata.csv").is_file():
        pytest.skip(f"HAM10000 not found at {HAM10000} (it lives in ../shared/data/ham10000 beside the repo; set SKINSYNTH_HAM10000 to point elsewhere)")
    return HAM10000


def copy_ham_subset(source: Path, dest: Path, per_class: int) -> Path:
    """Copy the first `per_class` lesions' images of every diagnosis into `dest`, in HAM10000's download layout
    (images/ + HAM10000_metadata.csv), keeping all images of each chosen lesion together."""
    with open(source / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    chosen_lesions: dict[str, list[str]] = {}
    for row in rows:
        lesions = chosen_lesions.setdefault(row["dx"], [])
        if row["lesion_id"] not in lesions and len(lesions) < per_class:
            lesions.append(row["lesion_id"])
    keep = {lesion for lesions in chosen_lesions.values() for lesion in lesions}
    kept = [row for row in rows if row["lesion_id"] in keep]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for row in kept:
        shutil.copyfile(source / "images" / f"{row['image_id']}.jpg", dest / "images" / f"{row['image_id']}.jpg")
    with open(dest / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return dest


@pytest.fixture(scope="session")
def ham_subset(ham10000_dir, tmp_path_factory) -> Path:
    """About 12 lesions per diagnosis copied from HAM10000 into a temp dir, in the original download layout."""
    return copy_ham_subset(ham10000_dir, tmp_path_factory.mktemp("ham") / "HAM10000", per_class=12)
