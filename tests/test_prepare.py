"""`skinsynth prepare`: leak-free splits (pure), the three readers, image checks and conversions, the output folder."""

from __future__ import annotations

import csv
import importlib
import io
import json
import random
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsynth.cli import main
from skinsynth.errors import DatasetError, OutputError, SkinsynthError
from skinsynth.prepare import PrepareConfig, parse_size, prepare, split_examples
from skinsynth.sources import Example, label_name
from skinsynth.sources.ham10000 import LABELS
from skinsynth.splits import assign_splits, cap_per_class

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def random_items(rng: random.Random, n_groups: int) -> tuple[list[str], list[str]]:
    """Labels and groups like a real source: 1-4 images per group, mostly one label per group, unbalanced labels."""
    labels, groups = [], []
    for g in range(n_groups):
        label = rng.choices("abcde", weights=[50, 20, 15, 10, 5])[0]
        for _ in range(rng.randint(1, 4)):
            labels.append(label if rng.random() > 0.05 else rng.choice("abcde"))
            groups.append(f"g{g}")
    return labels, groups


# --- splits: pure functions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_no_group_crosses_splits_and_labels_are_stratified(seed):
    rng = random.Random(seed)
    labels, groups = random_items(rng, rng.randint(1, 400))
    splits = assign_splits(labels, groups, FRACTIONS, seed=seed)
    split_of_group: dict[str, set] = {}
    for group, split in zip(groups, splits):
        split_of_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values())
    assert set(splits) <= set(FRACTIONS)
    assert assign_splits(labels, groups, FRACTIONS, seed=seed) == splits  # deterministic


def test_split_fractions_are_close_to_targets_per_label():
    labels, groups = random_items(random.Random(0), 3000)
    splits = assign_splits(labels, groups, FRACTIONS, seed=0)
    for label in "abcde":
        counts = Counter(s for lab, s in zip(labels, splits) if lab == label)
        total = sum(counts.values())
        for split, fraction in FRACTIONS.items():
            assert abs(counts[split] / total - fraction) < 0.03, (label, split, counts)


def test_seed_changes_the_split_and_order_of_input_does_not_matter_for_groups():
    labels, groups = random_items(random.Random(1), 300)
    assert assign_splits(labels, groups, FRACTIONS, seed=0) != assign_splits(labels, groups, FRACTIONS, seed=1)
    order = list(range(len(labels)))
    random.Random(2).shuffle(order)
    shuffled = assign_splits([labels[i] for i in order], [groups[i] for i in order], FRACTIONS, seed=0)
    original = assign_splits(labels, groups, FRACTIONS, seed=0)
    assert {groups[i]: s for i, s in zip(order, shuffled)} == dict(zip(groups, original))


def test_small_label_fills_train_first():
    assert assign_splits(["a"] * 3, ["x", "y", "z"], FRACTIONS) == ["train"] * 3
    assert Counter(assign_splits(["a"] * 10, [str(i) for i in range(10)], FRACTIONS)) == {"train": 8, "validation": 1, "test": 1}


def test_bad_fractions_are_refused():
    with pytest.raises(SkinsynthError, match="sum to 1"):
        assign_splits(["a"], ["g"], {"train": 0.5, "test": 0.1})
    with pytest.raises(SkinsynthError, match="--validation"):
        PrepareConfig(validation=0.6, test=0.4)
    with pytest.raises(SkinsynthError, match="not both"):
        PrepareConfig(resize=(8, 8), max_size=8)
    with pytest.raises(SkinsynthError, match="WIDTHxHEIGHT|512x384"):
        parse_size("big")
    assert parse_size("64x48") == (64, 48) and parse_size("32") == (32, 32)


def test_cap_per_class_keeps_whole_groups_up_to_the_cap():
    labels, groups = random_items(random.Random(3), 500)
    kept = cap_per_class(labels, groups, 40, seed=0)
    assert kept == sorted(kept) and cap_per_class(labels, groups, 40, seed=0) == kept
    kept_groups = {groups[i] for i in kept}
    assert {i for i, g in enumerate(groups) if g in kept_groups} == set(kept)  # whole groups only
    def majority(group):  # a group counts for its most common label, ties to the first name
        counts = Counter(lab for lab, h in zip(labels, groups) if h == group)
        return min(counts, key=lambda label: (-counts[label], label))

    stratum = {g: majority(g) for g in kept_groups}
    per_stratum = Counter(stratum[groups[i]] for i in kept)
    assert set(per_stratum) == set("abcde") and all(36 <= n <= 40 for n in per_stratum.values()), per_stratum


def test_preset_splits_are_kept_and_missing_ones_carved_from_train():
    examples = [Example(Path(f"{s}{i}.jpg"), "a" if i % 2 else "b", f"{s}{i}", split=s) for s in ("train", "test") for i in range(100)]
    splits = split_examples(examples, PrepareConfig(validation=0.2, test=0.1))
    assert splits[100:] == ["test"] * 100
    assert Counter(splits[:100]) == {"train": 80, "validation": 20}


def test_label_name():
    assert label_name("Basal Cell Carcinoma") == "basal_cell_carcinoma"
    assert label_name(" melanocytic-nevi ") == "melanocytic_nevi"
    with pytest.raises(DatasetError):
        label_name("--")


# --- HAM10000 -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ham_prepared(ham_subset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "ham"
    return out, prepare(ham_subset, "ham10000", out, progress=False, shard_size=50)


def metadata_rows(folder: Path) -> list[dict]:
    with open(folder / "HAM10000_metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_ham10000_counts_labels_and_attributes(ham_subset, ham_prepared):
    from datasets import load_dataset

    out, manifest = ham_prepared
    rows = metadata_rows(ham_subset)
    ds = load_dataset(str(out))
    assert list(ds) == ["train", "validation", "test"]
    assert sum(len(part) for part in ds.values()) == len(rows) == sum(s["num_rows"] for s in manifest["splits"].values())
    assert ds["train"].features["label"].names == list(LABELS.values())
    assert manifest["features"] == ds["train"].features.to_dict()
    assert manifest["skipped"] == {} and manifest["converted"] == {}
    assert manifest["license"] == "cc-by-nc-sa-4.0" and "10.1038/sdata.2018.161" in manifest["citation"]

    by_id = {r["image_id"]: r for r in rows}
    groups = {}
    for split, part in ds.items():
        for row in part.select_columns(["label", "group_id", "body_site", "sex", "age", "dx", "dx_type", "image_id"]):
            source = by_id[row["image_id"]]
            assert LABELS[row["dx"]] == part.features["label"].int2str(row["label"]) and row["dx"] == source["dx"]
            assert row["group_id"] == source["lesion_id"]
            assert row["body_site"] == (None if source["localization"] == "unknown" else source["localization"])
            assert row["sex"] in ("male", "female", None)
            assert row["age"] is None or (row["age"].isdigit() and float(source["age"]) == int(row["age"]))
            groups.setdefault(row["group_id"], set()).add(split)
    assert all(len(s) == 1 for s in groups.values())
    assert {name: sum(manifest["class_counts"][s][name] for s in ds) for name in LABELS.values()} == {
        LABELS[dx]: n for dx, n in Counter(r["dx"] for r in rows).items()
    }


def test_ham10000_keeps_original_bytes(ham_subset, ham_prepared):
    from datasets import Image as ImageFeature, load_dataset

    out, manifest = ham_prepared
    part = load_dataset(str(out), split="validation").cast_column("image", ImageFeature(decode=False))
    for row in part.select(range(5)):
        assert row["image"]["bytes"] == (ham_subset / "images" / row["image"]["path"]).read_bytes()
    source_bytes = sum(p.stat().st_size for p in (ham_subset / "images").glob("*.jpg"))
    assert sum(s["num_bytes"] for s in manifest["splits"].values()) <= 1.1 * source_bytes


def test_bytes_are_kept_when_run_from_the_image_folder(ham_subset, tmp_path, monkeypatch):
    """`datasets` would store only the file name of an image whose name exists in the working directory."""
    from datasets import Image as ImageFeature, load_dataset

    monkeypatch.chdir(ham_subset / "images")
    prepare(ham_subset, "ham10000", tmp_path / "out", progress=False, per_class_cap=2)
    part = load_dataset(str(tmp_path / "out"), split="train").cast_column("image", ImageFeature(decode=False))
    assert all(row["image"]["bytes"] == Path(row["image"]["path"]).read_bytes() for row in part)


def test_ham10000_is_deterministic(ham_subset, ham_prepared, tmp_path):
    _, manifest = ham_prepared
    again = prepare(ham_subset, "ham10000", tmp_path / "again", progress=False, shard_size=50, workers=1)
    assert [s["sha256"] for split in again["splits"].values() for s in split["shards"]] == [
        s["sha256"] for split in manifest["splits"].values() for s in split["shards"]
    ]


def test_ham10000_shared_layout_missing_file_and_unknown_label(ham_subset, tmp_path):
    source = tmp_path / "ham"
    shutil.copytree(ham_subset, source)
    rows = metadata_rows(source)
    (source / "HAM10000_metadata.csv").rename(source / "metadata.csv")  # the name of the shared copy
    (source / "images" / f"{rows[0]['image_id']}.jpg").unlink()
    with open(source / "metadata.csv", "a", newline="") as f:
        f.write(f"HAM_9999999,{rows[1]['image_id']},xyz,histo,50.0,male,back\n")
    (source / "images" / f"{rows[2]['image_id']}.jpg").write_bytes((source / "images" / f"{rows[2]['image_id']}.jpg").read_bytes()[:600])
    manifest = prepare(source, "ham10000", tmp_path / "out", progress=False, max_size=64)
    assert manifest["skipped"] == {"missing_file": 1, "unknown_label": 1, "corrupt_image": 1}
    assert manifest["source"]["num_examples"] == len(rows) + 1
    assert sum(s["num_rows"] for s in manifest["splits"].values()) == len(rows) - 2
    assert manifest["converted"] == {"resize": len(rows) - 2}


def test_ham10000_download_layout_with_two_image_folders(ham_subset, tmp_path):
    source = tmp_path / "HAM10000"
    shutil.copytree(ham_subset, source)
    (source / "images").rename(source / "HAM10000_images_part_1")
    (source / "HAM10000_images_part_2").mkdir()
    for path in sorted((source / "HAM10000_images_part_1").glob("*.jpg"))[::2]:
        path.rename(source / "HAM10000_images_part_2" / path.name)
    manifest = prepare(source, "ham10000", tmp_path / "out", progress=False)
    assert manifest["skipped"] == {} and sum(s["num_rows"] for s in manifest["splits"].values()) == len(metadata_rows(source))


def test_ham10000_per_class_cap(ham_subset, tmp_path):
    manifest = prepare(ham_subset, "ham10000", tmp_path / "out", progress=False, per_class_cap=5)
    per_class = Counter()
    for counts in manifest["class_counts"].values():
        per_class.update(counts)
    assert set(per_class) == set(LABELS.values()) and all(1 <= n <= 5 for n in per_class.values()), per_class


# --- ImageFolder and CSV trees built here ---------------------------------------------------------------------------


def image_file(path: Path, kind: str) -> Path:
    """Write a small test image of `kind` to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(zlib.crc32(str(path).encode())).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    if kind == "rgb":
        rgb.save(path, format="JPEG")
    elif kind == "greyscale":
        rgb.convert("L").save(path, format="PNG")
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, format="JPEG")
    elif kind == "rgba":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(0)
        rgba.save(path, format="PNG")
    elif kind == "16-bit":
        Image.fromarray(np.full((24, 32), 128 * 257, dtype=np.uint16)).save(path, format="PNG")
    elif kind == "truncated":
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG")
        path.write_bytes(buffer.getvalue()[:300])
    elif kind == "not-an-image":
        path.write_text("this is not a picture")
    return path


@pytest.fixture
def image_tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for i in range(12):
        image_file(root / "Train" / "Basal Cell Carcinoma" / f"bcc{i}.jpg", "rgb")
        image_file(root / "Train" / "melanoma" / f"mel{i}.jpg", "rgb")
    image_file(root / "Train" / "melanoma" / "grey.png", "greyscale")
    image_file(root / "Train" / "melanoma" / "cmyk.jpg", "cmyk")
    image_file(root / "Train" / "melanoma" / "alpha.png", "rgba")
    image_file(root / "Train" / "melanoma" / "deep.png", "16-bit")
    image_file(root / "Train" / "melanoma" / "broken.jpg", "truncated")
    image_file(root / "Train" / "melanoma" / "fake.jpg", "not-an-image")
    (root / "Train" / "melanoma" / "notes.txt").write_text("not an image either")
    (root / "Train" / "melanoma" / ".DS_Store").write_text("hidden: ignored")
    for i in range(3):
        image_file(root / "Test" / "Basal Cell Carcinoma" / f"t{i}.jpg", "rgb")
        image_file(root / "Test" / "melanoma" / f"t{i}.jpg", "rgb")
    return root


def test_imagefolder_keeps_its_splits_converts_and_skips(image_tree, tmp_path):
    from datasets import load_dataset

    manifest = prepare(image_tree, "imagefolder", tmp_path / "out", progress=False, validation=0.2)
    assert manifest["label_names"] == ["basal_cell_carcinoma", "melanoma"]
    assert manifest["skipped"] == {"corrupt_image": 1, "not_an_image": 2}
    assert manifest["converted"] == {"16-bit": 1, "alpha": 1, "cmyk": 1, "greyscale": 1}
    assert manifest["class_counts"]["test"] == {"basal_cell_carcinoma": 3, "melanoma": 3}
    train_val = {k: manifest["class_counts"]["train"][k] + manifest["class_counts"]["validation"][k] for k in manifest["label_names"]}
    assert train_val == {"basal_cell_carcinoma": 12, "melanoma": 16}
    assert manifest["class_counts"]["validation"]["melanoma"] >= 1

    ds = load_dataset(str(tmp_path / "out"))
    assert list(ds) == ["train", "validation", "test"]
    assert all(row["image"].mode == "RGB" and row["image"].size == (32, 24) for part in ds.values() for row in part)
    images = {row["group_id"]: row["image"] for row in ds["train"]} | {row["group_id"]: row["image"] for row in ds["validation"]}
    assert set(np.unique(np.asarray(images["Train/melanoma/deep.png"]))) == {128}  # 16-bit mid-grey scaled to 8 bits, not clipped to white
    assert np.asarray(images["Train/melanoma/alpha.png"]).min() == 255  # transparent becomes white


def test_imagefolder_resize_is_exact(image_tree, tmp_path):
    from datasets import load_dataset

    manifest = prepare(image_tree, "imagefolder", tmp_path / "out", progress=False, resize=(16, 16))
    ds = load_dataset(str(tmp_path / "out"))
    assert {row["image"].size for part in ds.values() for row in part} == {(16, 16)}
    assert manifest["converted"]["resize"] == 6 + 24


def test_imagefolder_follows_symlinked_folders_and_stops_at_loops(tmp_path):
    """A class folder, or a folder inside one, that is a link to a shared drive is read in full; a link back up the
    tree (a loop) is walked once, not forever."""
    drive = tmp_path / "drive"
    for i in range(4):
        image_file(drive / "melanoma" / f"m{i}.jpg", "rgb")
        image_file(drive / "more_naevi" / f"n{i}.jpg", "rgb")
    root = tmp_path / "tree"
    for i in range(4):
        image_file(root / "naevus" / f"own{i}.jpg", "rgb")
    (root / "melanoma").symlink_to(drive / "melanoma", target_is_directory=True)
    (root / "naevus" / "shared").symlink_to(drive / "more_naevi", target_is_directory=True)
    (drive / "more_naevi" / "loop").symlink_to(root / "naevus", target_is_directory=True)

    manifest = prepare(root, "imagefolder", tmp_path / "out", progress=False, validation=0.25, test=0.25)
    assert manifest["skipped"] == {}
    totals = {name: sum(manifest["class_counts"][split][name] for split in manifest["class_counts"]) for name in manifest["label_names"]}
    assert totals == {"melanoma": 4, "naevus": 8}


def test_an_unreadable_class_folder_is_one_error_not_lost_images(tmp_path, monkeypatch, capsys):
    """A folder the walk cannot list (permissions on a shared drive) would drop its images from the dataset without
    a word; prepare stops with exit code 2 naming it, and writes nothing."""
    import os

    root = tmp_path / "tree"
    for name in ("naevus", "melanoma"):
        for i in range(3):
            image_file(root / name / f"{name}{i}.jpg", "rgb")
    listing = os.scandir

    def refuse_melanoma(path="."):  # what os.walk meets in a folder without read permission (tests run as root)
        if Path(path).name == "melanoma":
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", refuse_melanoma)
    assert main(["-q", "prepare", str(root), "--format", "imagefolder", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the folder" in err and "melanoma" in err and "Permission denied" in err
    assert not (tmp_path / "out").exists()


def test_csv_images_under_a_symlinked_folder_are_found(tmp_path):
    """The table's images sit behind a link (how a folder on a shared drive is pointed at): none is missing, and a
    link loop under the images folder ends the walk instead of hanging or finding every image twice."""
    root = tmp_path / "table"
    write_table(tmp_path / "drive")
    root.mkdir()
    shutil.move(tmp_path / "drive" / "table.csv", root / "table.csv")
    (root / "pictures").mkdir()
    (root / "pictures" / "on_drive").symlink_to(tmp_path / "drive" / "pictures", target_is_directory=True)
    (tmp_path / "drive" / "pictures" / "again").symlink_to(root / "pictures", target_is_directory=True)
    mapping = root / "mapping.yaml"
    mapping.write_text(MAPPING)

    manifest = prepare(root / "table.csv", "csv", tmp_path / "out", mapping=mapping, progress=False)
    assert manifest["skipped"] == {"missing_file": 1, "unknown_label": 1}  # absent.jpg and the XYZ row only
    assert sum(s["num_rows"] for s in manifest["splits"].values()) == 30


def write_table(root: Path) -> Path:
    rows = []
    for i in range(30):
        label = ["MEL", "NEV", "BCC"][i % 3]
        rows.append({"file": f"img{i}.jpg", "dx": label, "patient": f"p{i // 2}", "site": ["BACK", "FACE", ""][i % 3], "fst": ["1.0", "2.0", "-1"][i % 3], "note": str(i)})
        image_file(root / "pictures" / f"img{i}.jpg", "rgb")
    rows.append({"file": "absent.jpg", "dx": "MEL", "patient": "p99", "site": "BACK", "fst": "1", "note": "x"})
    image_file(root / "pictures" / "odd.jpg", "rgb")
    rows.append({"file": "odd.jpg", "dx": "XYZ", "patient": "p98", "site": "BACK", "fst": "1", "note": "y"})
    with open(root / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "table.csv"


MAPPING = """
name: Test table
license: cc-by-4.0
citation: A. Author, A table, 2024.
images: pictures
image: {column: file}
label: {column: dx, values: {MEL: melanoma, NEV: melanocytic_nevus, BCC: basal_cell_carcinoma}}
group_id: {column: patient}
attributes:
  body_site: {column: site, values: {BACK: back, FACE: face}}
  fitzpatrick: {column: fst, values: {"1": I, "2": II}, missing: ["", "-1"]}
columns: [note]
"""


def test_csv_with_mapping_file(tmp_path):
    from datasets import load_dataset

    write_table(tmp_path)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    manifest = prepare(tmp_path / "table.csv", "csv", tmp_path / "out", mapping=tmp_path / "mapping.yaml", progress=False, validation=0.2, test=0.2)
    assert manifest["skipped"] == {"missing_file": 1, "unknown_label": 1}
    assert manifest["label_names"] == ["basal_cell_carcinoma", "melanocytic_nevus", "melanoma"]
    assert manifest["source"]["name"] == "Test table" and manifest["license"] == "cc-by-4.0"
    ds = load_dataset(str(tmp_path / "out"))
    rows = [row for part in ds.values() for row in part.remove_columns("image")]
    assert len(rows) == 30
    assert {(r["body_site"], r["fitzpatrick"]) for r in rows} == {("back", "I"), ("face", "II"), (None, None)}
    assert set(ds["train"].features) == {"image", "label", "group_id", "body_site", "fitzpatrick", "note"}
    patients = {}
    for split, part in ds.items():
        for group in part["group_id"]:
            patients.setdefault(group, set()).add(split)
    assert len(patients) == 15 and all(len(s) == 1 for s in patients.values())


def test_csv_with_column_options_through_the_cli(tmp_path, capsys):
    write_table(tmp_path)
    code = main(["-q", "prepare", str(tmp_path / "table.csv"), "--format", "csv", "--out", str(tmp_path / "out"), "--image-column", "file",
                 "--label-column", "dx", "--group-column", "patient", "--attribute", "body_site=site", "--image-dir", "pictures"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped: missing_file: 1" in printed and "load_dataset(" in printed
    manifest = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert manifest["label_names"] == ["bcc", "mel", "nev", "xyz"]
    assert manifest["attributes"] == ["body_site"]


def test_bad_input_is_a_clear_error(tmp_path, image_tree, capsys):
    with pytest.raises(DatasetError, match="does not exist"):
        prepare(tmp_path / "nowhere", "imagefolder", tmp_path / "out")
    with pytest.raises(DatasetError, match="needs a column mapping"):
        prepare(write_table(tmp_path), "csv", tmp_path / "out")
    with pytest.raises(DatasetError, match="no column"):
        prepare(tmp_path / "table.csv", "csv", tmp_path / "out", mapping={"image": {"column": "path"}, "label": {"column": "dx"}})
    with pytest.raises(DatasetError, match="reserved"):
        prepare(tmp_path / "table.csv", "csv", tmp_path / "out", mapping={"image": {"column": "file"}, "label": {"column": "dx"}, "columns": ["group_id"]})
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv"):
        prepare(image_tree, "ham10000", tmp_path / "out")
    assert main(["prepare", str(image_tree), "--format", "csv", "--mapping", "m.yaml", "--label-column", "x", "--out", str(tmp_path / "o")]) == 2
    assert "not both" in capsys.readouterr().err


def test_out_is_refused_when_not_empty_and_replaced_only_when_complete(image_tree, tmp_path, monkeypatch):
    module = importlib.import_module("skinsynth.prepare.output")  # where the writing pass converts each image

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputError, match="--overwrite"):
        prepare(image_tree, "imagefolder", out, progress=False)

    calls = Counter()

    def failing(path, check, config):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("disk on fire")
        return original(path, check, config)

    original = module.image_bytes
    monkeypatch.setattr(module, "image_bytes", failing)
    with pytest.raises(RuntimeError):
        prepare(image_tree, "imagefolder", out, progress=False, overwrite=True, shard_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tree"]  # no temporary folder left behind
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    monkeypatch.setattr(module, "image_bytes", original)
    prepare(image_tree, "imagefolder", out, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "duplicates.json", "prepare.json", "sample_grid.png"]
    assert str(image_tree) not in (out / "README.md").read_text()  # the card is published: no local path in it

    for bad_out in (image_tree, tmp_path, image_tree / "prepared"):
        with pytest.raises(OutputError, match="source|inside"):
            prepare(image_tree, "imagefolder", bad_out, progress=False, overwrite=True)
    assert (image_tree / "Test" / "melanoma" / "t0.jpg").is_file()


def test_phone_photos_are_turned_upright_when_re_encoded(tmp_path):
    from datasets import load_dataset

    image = Image.new("RGB", (40, 20), (200, 10, 10))
    image.paste((10, 10, 200), (20, 0, 40, 20))  # left half red, right half blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    (tmp_path / "src" / "nevus").mkdir(parents=True)
    image.save(tmp_path / "src" / "nevus" / "a.jpg", exif=exif)
    kept = prepare(tmp_path / "src", "imagefolder", tmp_path / "o1", progress=False, validation=0, test=0)
    resized = prepare(tmp_path / "src", "imagefolder", tmp_path / "o2", progress=False, validation=0, test=0, max_size=10)
    assert kept["converted"] == {} and resized["converted"] == {"resize": 1}
    upright = load_dataset(str(tmp_path / "o1"), split="train")[0]["image"]
    assert upright.size == (20, 40)  # kept bytes: `datasets` applies the EXIF orientation
    small = load_dataset(str(tmp_path / "o2"), split="train")[0]["image"]
    assert small.size == (5, 10)
    expected = np.asarray(upright.resize((5, 10)), dtype=float)
    assert np.abs(np.asarray(small, dtype=float) - expected).mean() < 20  # same picture, not a squashed sideways one


# --- documented mappings ------------------------------------------------------------------------------------------

MAPPINGS = sorted((Path(__file__).resolve().parents[1] / "dataset_scripts" / "mappings").glob("*.yaml"))


@pytest.mark.parametrize("path", MAPPINGS, ids=[p.stem for p in MAPPINGS])
def test_documented_mappings_are_valid(path):
    from skinsynth.sources.csv import load_mapping

    mapping = load_mapping(path)
    assert mapping.name and mapping.license and mapping.citation and mapping.table
    assert set(mapping.attributes) <= {"body_site", "sex", "age", "fitzpatrick"}


def test_scin_tables_become_one_row_per_image(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "dataset_scripts" / "scin_table.py"
    spec = importlib.util.spec_from_file_location("scin_table", script)
    scin_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scin_table)

    cases = [
        {"case_id": "1", "image_1_path": "dataset/images/a.png", "image_2_path": "dataset/images/b.png", "image_3_path": "", "image_1_shot_type": "CLOSE_UP",
         "image_2_shot_type": "AT_DISTANCE", "image_3_shot_type": "", "sex_at_birth": "FEMALE", "age_group": "AGE_18_TO_29", "body_parts_arm": "YES", "body_parts_leg": ""},
        {"case_id": "2", "image_1_path": "dataset/images/c.png", "image_2_path": "", "image_3_path": "", "image_1_shot_type": "CLOSE_UP",
         "image_2_shot_type": "", "image_3_shot_type": "", "sex_at_birth": "MALE", "age_group": "AGE_80_OR_ABOVE", "body_parts_arm": "YES", "body_parts_leg": "YES"},
        {"case_id": "3", "image_1_path": "dataset/images/d.png", "image_2_path": "", "image_3_path": "", "image_1_shot_type": "",
         "image_2_shot_type": "", "image_3_shot_type": "", "sex_at_birth": "OTHER_OR_UNSPECIFIED", "age_group": "", "body_parts_arm": "", "body_parts_leg": ""},
    ]
    labels = [
        {"case_id": "1", "weighted_skin_condition_label": "{'Eczema': 0.67, 'Psoriasis': 0.33}", "dermatologist_fitzpatrick_skin_type_label_1": "FST2"},
        {"case_id": "2", "weighted_skin_condition_label": "{'Tinea': 1.0}", "dermatologist_fitzpatrick_skin_type_label_1": "NONE_IDENTIFIED"},
        {"case_id": "3", "weighted_skin_condition_label": "", "dermatologist_fitzpatrick_skin_type_label_1": ""},
    ]
    for name, rows in (("scin_cases.csv", cases), ("scin_labels.csv", labels)):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for name in "abcd":
        image_file(tmp_path / "images" / f"{name}.png", "rgb")
    scin_table.build(tmp_path)
    manifest = prepare(tmp_path, "csv", tmp_path / "out", mapping=MAPPINGS[[p.stem for p in MAPPINGS].index("scin")], progress=False, validation=0, test=0)
    assert manifest["skipped"] == {"missing_label": 1}
    assert manifest["label_names"] == ["eczema", "tinea"] and manifest["class_counts"]["train"] == {"eczema": 2, "tinea": 1}
    from datasets import load_dataset

    rows = sorted(load_dataset(str(tmp_path / "out"), split="train").remove_columns("image"), key=lambda r: r["image_shot_type"])
    assert [(r["group_id"], r["fitzpatrick"], r["body_site"], r["sex"], r["age"]) for r in rows] == [
        ("1", "II", "arm", "female", "18-29"), ("1", "II", "arm", "female", "18-29"), ("2", None, "multiple", "male", "80+")
    ]
