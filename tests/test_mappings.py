"""The shipped column mappings on tables and folders in each dataset's real download layout, built here: PAD-UFES-20
unzipped into `images/imgs_part_1..3/`, and the ISIC 2018, 2019 and 2020 challenge files."""

from __future__ import annotations

import csv
import json
from collections import Counter
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


# Rows of the real metadata.csv (img_id and the part the zip puts it in).
PAD_REAL_IMAGES = [("PAT_1516_1765_530.png", 3), ("PAT_46_881_939.png", 1), ("PAT_1545_1867_547.png", 3), ("PAT_1989_4061_934.png", 3),
                   ("PAT_684_1302_588.png", 2), ("PAT_1549_1882_230.png", 3), ("PAT_778_1471_835.png", 2), ("PAT_117_179_983.png", 1),
                   ("PAT_1995_4080_695.png", 3)]
PAD_LAYOUTS = {"mendeley": "images/imgs_part_{}", "kaggle": "imgs_part_{0}/imgs_part_{0}", "kaggle, moved into images/": "images/imgs_part_{0}/imgs_part_{0}"}


@pytest.mark.parametrize("layout", PAD_LAYOUTS)
def test_pad_ufes_20_as_mendeley_and_its_kaggle_mirror_unpack(tmp_path, layout):
    """Mendeley's zip unpacks to images/imgs_part_N/; the Kaggle mirror to imgs_part_N/imgs_part_N/ beside metadata.csv."""
    root, rows = tmp_path / "pad-ufes-20", []
    for i, (name, part) in enumerate(PAD_REAL_IMAGES):
        picture(root / PAD_LAYOUTS[layout].format(part) / name, seed=i)
        patient, lesion, _ = name.removesuffix(".png").removeprefix("PAT_").split("_")
        row = dict.fromkeys(PAD_COLUMNS, "")
        rows.append({**row, "patient_id": f"PAT_{patient}", "lesion_id": lesion, "diagnostic": ["ACK", "BCC", "NEV"][i % 3], "img_id": name,
                     "region": "FACE", "fitspatrick": "2.0"})
    write_csv(root / "metadata.csv", rows)
    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False, validation=0.25, test=0.25)
    assert manifest["skipped"] == {}
    assert sorted(r["lesion_id"] for r in dataset_rows(tmp_path / "out")) == sorted(n.split("_")[2] for n, _ in PAD_REAL_IMAGES)


def test_an_image_name_found_twice_is_one_clear_error(tmp_path, capsys):
    root = pad_ufes_tree(tmp_path / "pad-ufes-20", n=6)
    twin = root / "images" / "imgs_part_3" / "PAT_1000_100_000.png"
    twin.write_bytes((root / "images" / "imgs_part_1" / "PAT_1000_100_000.png").read_bytes())
    with pytest.raises(DatasetError, match="found twice.*imgs_part_1/PAT_1000_100_000.png.*imgs_part_3/PAT_1000_100_000.png"):
        prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False)
    code = main(["prepare", str(root), "--format", "csv", "--mapping", str(MAPPINGS / "pad_ufes_20.yaml"), "--out", str(tmp_path / "out")])
    assert code == 2 and "found twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- ISIC challenges ------------------------------------------------------------------------------------------------

HAM_NAMES = {"melanoma", "melanocytic_nevus", "basal_cell_carcinoma", "actinic_keratosis", "benign_keratosis", "dermatofibroma", "vascular_lesion"}


def one_hot(image: str, codes: list[str], *on: str) -> dict:
    return {"image": image, **{code: "1.0" if code in on else "0.0" for code in codes}}


def test_isic_2018_one_hot_labels_lesion_groups_and_bad_rows(tmp_path):
    codes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    root = tmp_path / "isic2018"
    rows, groupings = [], []
    for i in range(28):
        image = f"ISIC_{24306 + i:07d}"
        picture(root / "ISIC2018_Task3_Training_Input" / f"{image}.jpg", seed=i)
        rows.append(one_hot(image, codes, codes[i % 7]))
        groupings.append({"image": image, "lesion_id": f"HAM_{i // 2:07d}", "diagnosis_confirm_type": "histopathology"})
    picture(root / "ISIC2018_Task3_Training_Input" / "ISIC_0099998.jpg", seed=98)
    picture(root / "ISIC2018_Task3_Training_Input" / "ISIC_0099999.jpg", seed=99)
    rows += [one_hot("ISIC_0099998", codes), one_hot("ISIC_0099999", codes, "MEL", "NV")]  # no 1, two 1s
    write_csv(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv", rows)
    write_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", groupings)

    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "isic_2018.yaml", progress=False, validation=0.25, test=0.25)
    assert manifest["skipped"] == {"no_label": 1, "several_labels": 1}
    assert set(manifest["label_names"]) == HAM_NAMES
    rows = {r["diagnosis_confirm_type"] + r["group_id"]: r for r in dataset_rows(tmp_path / "out")}
    assert len(rows) == 14  # 28 images, two per lesion
    assert rows["histopathologyHAM_0000000"]["label"] in ("melanoma", "melanocytic_nevus")
    assert {r["label"] for r in rows.values()} == HAM_NAMES


def test_isic_2018_with_its_validation_and_test_sets_keeps_the_official_splits(tmp_path):
    """ISIC 2018 Task 3 ships three ground-truth tables (training 10,015 images, validation 193 from ISIC_0034321,
    test 1,512 from ISIC_0034524), each beside its own images folder; the lesion groupings cover training only.
    Each table is found in its zip's folder or unpacked flat, and its images keep their official split."""
    codes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    root = tmp_path / "isic2018"
    tables = {"Training": (24306, 21), "Validation": (34321, 14), "Test": (34524, 14)}
    for name, (first, n) in tables.items():
        rows = []
        for i in range(n):
            image = f"ISIC_{first + i:07d}"
            picture(root / f"ISIC2018_Task3_{name}_Input" / f"{image}.jpg", seed=first + i)
            rows.append(one_hot(image, codes, codes[i % 7]))
        folder = root / f"ISIC2018_Task3_{name}_GroundTruth" if name != "Test" else root  # the test table unpacked flat
        write_csv(folder / f"ISIC2018_Task3_{name}_GroundTruth.csv", rows)
    (root / "ISIC2018_Task3_Test_Input" / "ATTRIBUTION.txt").write_text("as the zip ships it")
    write_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv",
              [{"image": f"ISIC_{24306 + i:07d}", "lesion_id": f"HAM_{i // 3:07d}", "diagnosis_confirm_type": "histopathology"} for i in range(21)])

    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "isic_2018.yaml", progress=False)
    assert manifest["skipped"] == {} and manifest["source"]["official_splits"] == ["validation", "test"]
    assert {split: info["num_rows"] for split, info in manifest["splits"].items()} == {"train": 21, "validation": 14, "test": 14}
    by_split = {}
    for row in dataset_rows(tmp_path / "out"):
        by_split.setdefault(row["split"], set()).add(row["group_id"])
    assert by_split["validation"] == {f"ISIC_{34321 + i:07d}" for i in range(14)}  # no lesion groupings: each image its own group
    assert by_split["test"] == {f"ISIC_{34524 + i:07d}" for i in range(14)}
    assert by_split["train"] == {f"HAM_{i:07d}" for i in range(7)}
    assert set(manifest["label_names"]) == HAM_NAMES


def isic_2019_tree(root: Path) -> Path:
    codes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    sites = ["anterior torso", "posterior torso", "head/neck", "palms/soles", ""]
    truth, metadata = [], []
    for i in range(32):
        image = f"ISIC_{i:07d}" + ("_downsampled" if i % 5 == 0 else "")
        picture(root / "ISIC_2019_Training_Input" / f"{image}.jpg", seed=1000 + i)
        truth.append(one_hot(image, codes, codes[i % 8]))
        if i != 3:  # a ground-truth row without metadata: attributes unknown
            metadata.append({"image": image, "age_approx": f"{30 + i}.0", "anatom_site_general": sites[i % 5],
                             "lesion_id": f"BCN_{i // 2:07d}" if i < 16 else "", "sex": ["male", "female", ""][i % 3]})
    picture(root / "ISIC_2019_Training_Input" / "ISIC_0100000.jpg", seed=100)
    truth.append(one_hot("ISIC_0100000", codes, "UNK"))
    metadata.append({"image": "ISIC_0999999", "age_approx": "50.0", "anatom_site_general": "", "lesion_id": "", "sex": ""})  # no such image
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", truth)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", metadata)
    return root


def test_isic_2019_one_hot_labels_joined_metadata_and_groups(tmp_path):
    root = isic_2019_tree(tmp_path / "isic2019")
    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "isic_2019.yaml", progress=False, validation=0.25, test=0.25)
    assert manifest["skipped"] == {"excluded_label": 1, "metadata_without_image": 1}
    assert set(manifest["label_names"]) == HAM_NAMES | {"squamous_cell_carcinoma"}
    rows = dataset_rows(tmp_path / "out")
    assert len(rows) == 32
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group_id"], []).append(r)
    assert len(by_group["BCN_0000000"]) == 2 and {r["label"] for r in by_group["BCN_0000000"]} == {"melanoma", "melanocytic_nevus"}
    assert len({r["split"] for r in by_group["BCN_0000000"]}) == 1
    alone = by_group["ISIC_0000020_downsampled"][0]  # no lesion id: its own group
    assert (alone["label"], alone["body_site"], alone["age"], alone["sex"]) == ("benign_keratosis", "trunk", "50", None)
    unjoined = by_group["ISIC_0000003"]  # no metadata row: no lesion id, no attributes
    assert [(r["label"], r["body_site"], r["age"], r["sex"]) for r in unjoined] == [("actinic_keratosis", None, None, None)]
    assert {r["body_site"] for r in rows} == {"trunk", "back", "head/neck", "acral", None}


def isic_2020_rows(n: int) -> list[dict]:
    diagnoses = ["nevus", "melanoma", "unknown", "seborrheic keratosis", "lentigo NOS", "solar lentigo"]
    return [{"image_name": f"ISIC_{2637011 + i:07d}", "patient_id": f"IP_{7279968 + i // 3:07d}", "sex": ["male", "female"][i % 2],
             "age_approx": f"{45 + 5 * (i % 4)}.0", "anatom_site_general_challenge": ["torso", "head/neck", "lower extremity", ""][i % 4],
             "diagnosis": diagnoses[i % 6], "benign_malignant": "malignant" if i % 6 == 1 else "benign", "target": str(int(i % 6 == 1))}
            for i in range(n)]


@pytest.mark.parametrize("layout", ["isic", "kaggle"])
def test_isic_2020_from_the_isic_download_and_from_kaggle(tmp_path, layout):
    root = tmp_path / layout
    rows = isic_2020_rows(36)
    if layout == "isic":
        rows = [{**r, "lesion_id": f"IL_{i:07d}"} for i, r in enumerate(rows)]
        write_csv(root / "ISIC_2020_Training_GroundTruth_v2.csv", rows)
        folder = root / "ISIC_2020_Training_JPEG" / "train"
    else:
        write_csv(root / "train.csv", rows)
        folder = root / "jpeg" / "train"
    for i, row in enumerate(rows):
        picture(folder / f"{row['image_name']}.jpg", seed=i)
    picture(root / "jpeg" / "test" / "ISIC_0052060.jpg", seed=500)  # another split's image: not in the table, ignored

    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "isic_2020.yaml", progress=False, validation=0.25, test=0.25)
    assert manifest["skipped"] == {"missing_label": 6}  # diagnosis `unknown`
    assert manifest["label_names"] == ["benign_keratosis", "melanocytic_nevus", "melanoma"]
    assert manifest["absent_classes"] == ["atypical_melanocytic_proliferation", "cafe_au_lait_macule"]  # named by the mapping, no row here
    out = dataset_rows(tmp_path / "out")
    assert len(out) == 30 and {r["label"] for r in out} == {"benign_keratosis", "melanocytic_nevus", "melanoma"}
    first = next(r for r in out if r["group_id"] == "IP_7279968" and r["label"] == "melanocytic_nevus")
    assert (first["body_site"], first["sex"], first["age"], first["benign_malignant"]) == ("trunk", "male", "45", "benign")
    assert all(r["benign_malignant"] == ("malignant" if r["label"] == "melanoma" else "benign") for r in out)
    patients = {}
    for r in out:
        patients.setdefault(r["group_id"], set()).add(r["split"])
    assert len(patients) == 12 and all(len(s) == 1 for s in patients.values())


def test_classes_the_mapping_names_but_the_data_lacks_are_absent_not_empty(tmp_path, capsys):
    """A subset of ISIC 2019 without dermatofibroma or vascular lesions: those classes are reported as absent and
    left out of the label names, unless `--classes` (or the mapping's `classes`) requires them: then it is an error."""
    root = isic_2019_tree(tmp_path / "isic2019")
    truth = root / "ISIC_2019_Training_GroundTruth.csv"
    with open(truth, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["DF"] != "1.0" and r["VASC"] != "1.0"]
    write_csv(truth, rows)

    manifest = prepare(root, "csv", tmp_path / "out", mapping=MAPPINGS / "isic_2019.yaml", progress=False, validation=0.25, test=0.25)
    assert manifest["absent_classes"] == ["dermatofibroma", "vascular_lesion"]
    assert set(manifest["label_names"]) == HAM_NAMES - {"dermatofibroma", "vascular_lesion"} | {"squamous_cell_carcinoma"}
    assert min(sum(counts[name] for counts in manifest["class_counts"].values()) for name in manifest["label_names"]) > 0
    assert "dermatofibroma" not in manifest["class_counts"]["train"]

    code = main(["prepare", str(root), "--format", "csv", "--mapping", str(MAPPINGS / "isic_2019.yaml"), "--out", str(tmp_path / "strict"),
                 "--classes", "melanoma,dermatofibroma,Vascular lesion"])
    assert code == 2
    assert "dermatofibroma, vascular_lesion" in capsys.readouterr().err and not (tmp_path / "strict").exists()
    assert prepare(root, "csv", tmp_path / "enough", mapping=MAPPINGS / "isic_2019.yaml", progress=False, classes=("melanoma", "melanocytic_nevus"))
    mapping = (MAPPINGS / "isic_2019.yaml").read_text() + "classes: [melanoma, dermatofibroma]\n"
    (tmp_path / "strict.yaml").write_text(mapping)
    with pytest.raises(DatasetError, match="dermatofibroma"):
        prepare(root, "csv", tmp_path / "strict", mapping=tmp_path / "strict.yaml", progress=False)


def test_bad_mappings_and_tables_are_clear_errors(tmp_path, capsys):
    root = isic_2019_tree(tmp_path / "isic2019")
    mapping = {"table": "ISIC_2019_Training_GroundTruth.csv", "images": "ISIC_2019_Training_Input", "image": {"column": "image", "template": "{}.jpg"}}
    with pytest.raises(DatasetError, match="exactly one"):
        prepare(root, "csv", tmp_path / "out", mapping={**mapping, "label": {"column": "MEL", "one_hot": {"MEL": "melanoma"}}})
    with pytest.raises(DatasetError, match="no column.*'XX'"):
        prepare(root, "csv", tmp_path / "out", mapping={**mapping, "label": {"one_hot": {"MEL": "melanoma", "XX": "other"}}})
    with pytest.raises(DatasetError, match="not found"):
        prepare(root, "csv", tmp_path / "out", mapping={**mapping, "label": {"one_hot": {"MEL": "melanoma"}}, "join": {"table": "absent.csv", "key": "image"}})
    metadata = root / "ISIC_2019_Training_Metadata.csv"
    metadata.write_text(metadata.read_text() + metadata.read_text().splitlines()[1] + "\n")
    code = main(["prepare", str(root), "--format", "csv", "--mapping", str(MAPPINGS / "isic_2019.yaml"), "--out", str(tmp_path / "out")])
    assert code == 2 and "on two rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- combining converted datasets -----------------------------------------------------------------------------------


def test_combining_datasets_keeps_sources_and_dedups_across_them(tmp_path, capsys):
    pad = pad_ufes_tree(tmp_path / "pad-ufes-20")
    isic = isic_2019_tree(tmp_path / "isic2019")
    pad_images = {p.name: p for p in (pad / "images").rglob("*.png")}
    # ISIC holds a re-encoded copy of a PAD nevus (same label) and of a PAD melanoma (labelled BCC in ISIC).
    Image.open(pad_images["PAT_1000_101_001.png"]).convert("RGB").save(isic / "ISIC_2019_Training_Input" / "ISIC_0000001.jpg", quality=95)
    Image.open(pad_images["PAT_1001_102_002.png"]).convert("RGB").save(isic / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg", quality=95)
    prepare(pad, "csv", tmp_path / "pad", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False, validation=0.25, test=0.25)
    prepare(isic, "csv", tmp_path / "isic", mapping=MAPPINGS / "isic_2019.yaml", progress=False, validation=0.25, test=0.25)

    code = main(["-q", "prepare", str(tmp_path / "pad"), str(tmp_path / "isic"), "--format", "skinsynth", "--out", str(tmp_path / "both"),
                 "--validation", "0.25", "--test", "0.25"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "both" / "prepare.json").read_text())
    assert manifest["source"]["name"] == "PAD-UFES-20 + ISIC 2019" and manifest["license"] == "other"  # CC BY 4.0 + CC BY-NC 4.0
    assert [(c["name"], c["rows"]) for c in manifest["source"]["combined"]] == [("PAD-UFES-20", 24), ("ISIC 2019", 32)]
    found = manifest["duplicates"]
    assert (found["clusters"], found["across_groups"], found["conflicting"]["clusters"], found["conflicting"]["dropped"]) == (2, 2, 1, 2)
    assert manifest["attributes"] == ["fitzpatrick", "body_site", "sex", "age"]
    assert manifest["source_columns"] == ["lesion_id", "diagnostic", "biopsed", "source"]
    assert "squamous_cell_carcinoma" in manifest["label_names"] and "dermatofibroma" in manifest["label_names"]

    rows = dataset_rows(tmp_path / "both")
    assert len(rows) == 24 + 32 - 2
    assert Counter(r["source"] for r in rows) == {"PAD-UFES-20": 23, "ISIC 2019": 31}
    pad_nevus = next(r for r in rows if r["source"] == "PAD-UFES-20" and r["lesion_id"] == "101")
    assert pad_nevus["group_id"] == "ISIC 2019/BCN_0000000"  # joined with the copy's lesion (and so its patient's other lesion too)
    group = [r for r in rows if r["group_id"] == pad_nevus["group_id"]]
    assert Counter(r["source"] for r in group) == {"PAD-UFES-20": 2, "ISIC 2019": 2} and len({r["split"] for r in group}) == 1
    assert {r["group_id"].split("/")[0] for r in rows} == {"PAD-UFES-20", "ISIC 2019"}
    assert all(r["fitzpatrick"] is None for r in rows if r["source"] == "ISIC 2019")
    groups = {}
    for r in rows:
        groups.setdefault(r["group_id"], set()).add(r["split"])
    assert all(len(splits) == 1 for splits in groups.values())


def test_combining_refuses_what_it_cannot_combine(tmp_path, capsys):
    pad = pad_ufes_tree(tmp_path / "pad-ufes-20", n=8)
    prepare(pad, "csv", tmp_path / "a", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False, validation=0.25, test=0.25)
    prepare(pad, "csv", tmp_path / "b", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False, validation=0.25, test=0.25)
    with pytest.raises(DatasetError, match="both named"):
        prepare([tmp_path / "a", tmp_path / "b"], "skinsynth", tmp_path / "out", progress=False)
    assert main(["prepare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "csv", "--out", str(tmp_path / "out")]) == 2
    assert "only `--format skinsynth` combines" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="no skinsynth manifest"):
        prepare([tmp_path / "a", pad], "skinsynth", tmp_path / "out", progress=False)
    with pytest.raises(DatasetError, match="column mapping only applies"):
        prepare([tmp_path / "a"], "skinsynth", tmp_path / "out", mapping=MAPPINGS / "pad_ufes_20.yaml", progress=False)
    manifest = json.loads((tmp_path / "b" / "prepare.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = "../a/data/" + manifest["splits"]["train"]["shards"][0]["file"].split("/")[-1]
    (tmp_path / "b" / "prepare.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="points outside"):  # a manifest cannot pull in files from outside its dataset
        prepare([tmp_path / "a", tmp_path / "b"], "skinsynth", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
