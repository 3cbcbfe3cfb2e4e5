"""The shipped column mappings on tables and folders in each dataset's real download layout, built here: PAD-UFES-20
unzipped into `images/imgs_part_1..3/`, and the ISIC 2018, 2019 and 2020 challenge files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsynth.cli import main
from skinsynth.errors import DatasetError
from skinsynth.prepare import prepare

from .conftest import REPO

MAPPINGS = REPO / "dataset_scripts" / "mappings"


def picture(path: Path, seed: int) -> Path:
    """A small distinct image (a random colour field scaled up, so no two are near-duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    field = np.random.default_rng(seed).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(field).resize((40, 32), Image.Resampling.BICUBIC).save(path)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def dataset_rows(out: Path) -> list[dict]:
    from datasets import load_dataset

    ds = load_dataset(str(out))
    names = ds["train"].features["label"].names
    return [{**row, "label": names[row["label"]], "split": split} for split, part in ds.items() for row in part.remove_columns("image")]


# --- PAD-UFES-20 ----------------------------------------------------------------------------------------------------

PAD_COLUMNS = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age", "pesticide", "gender",
               "skin_cancer_history", "cancer_history", "has_piped_water", "has_sewage_system", "fitspatrick", "region", "diameter_1",
               "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed"]


def pad_ufes_tree(root: Path, n: int = 24) -> Path:
    """metadata.csv beside images/imgs_part_1..3/, as the PAD-UFES-20 zip unpacks."""
    rows = []
    for i in range(n):
        patient, lesion = 1000 + i // 2, 100 + i
        name = f"PAT_{patient}_{lesion}_{i:03d}.png"
        picture(root / "images" / f"imgs_part_{i % 3 + 1}" / name, seed=i)
        row = dict.fromkeys(PAD_COLUMNS, "")
        row.update(patient_id=f"PAT_{patient}", lesion_id=str(lesion), age=str(40 + i), gender=["MALE", "FEMALE"][i % 2],
                   fitspatrick=["1.0", "3.0", ""][i % 3], region=["FACE", "BACK", "NOSE", "FOREARM"][i % 4],
                   diagnostic=["BCC", "NEV", "MEL", "SEK"][i % 4], img_id=name, biopsed=["True", "False"][i % 2])
        rows.append(row)
    write_csv(root / "metadata.csv", rows)
    return root


def test_pad_ufes_20_unzipped_in_three_parts_converts_with_the_shipped_mapping(tmp_path):
    root = pad_ufes_tree(tmp_path / "pad-ufes-20")
    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False, validation=0.25, test=0.25)
    assert manifest["skipped"] == {} and manifest["source"]["name"] == "PAD-UFES-20"
    rows = dataset_rows(tmp_path / "out")
    assert len(rows) == 24
    first = next(r for r in rows if r["lesion_id"] == "100")
    assert (first["label"], first["group_id"], first["body_site"], first["fitzpatrick"], first["sex"], first["age"]) == (
        "basal_cell_carcinoma", "PAT_1000", "face", "I", "male", "40")
    assert {r["body_site"] for r in rows} == {"face", "back", "upper extremity"}


def test_an_image_name_found_twice_is_one_clear_error(tmp_path, capsys):
    root = pad_ufes_tree(tmp_path / "pad-ufes-20", n=6)
    twin = root / "images" / "imgs_part_3" / "PAT_1000_100_000.png"
    twin.write_bytes((root / "images" / "imgs_part_1" / "PAT_1000_100_000.png").read_bytes())
    with pytest.raises(DatasetError, match="found twice.*imgs_part_1/PAT_1000_100_000.png.*imgs_part_3/PAT_1000_100_000.png"):
        prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False)
    code = main(["prepare", str(root), "--format", "csv", "--mapping", str(MAPPINGS / "pad_ufes_20.yaml"), "--out", str(tmp_path / "out")])
    assert code == 2 and "found twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
