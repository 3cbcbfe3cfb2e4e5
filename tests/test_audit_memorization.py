"""Memorization audit on real HAM10000 images, the issue's test at a small scale: images of new patients (the real
test split's lesions) are flagged at about the nominal false-positive rate with no significant excess, copies of
training images are caught, and every report measures its own false-positive rate and planted-copy recall."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from skinsynth.audit.copies import plant_copy
from skinsynth.audit.features import ContrastiveConfig, ContrastiveFeatures
from skinsynth.audit.memorization import audit_memorization, halves_by_group
from skinsynth.audit.stats import wilson_interval
from skinsynth.cli import main
from skinsynth.errors import SkinsynthError

from .audit_datasets import CLASSES, ham_rows, jpeg, tiny_classifier, write_dataset

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

FAST = ContrastiveConfig(image_size=32, width=32, steps=300, batch_size=64)  # ~30 s on one core


def copy_row(row: dict, rng, strength: str) -> dict:
    image = plant_copy(Image.open(io.BytesIO(row["image"]["bytes"])), rng, strength)
    return {**row, "image": {"bytes": jpeg(image, 95), "path": f"copy-{row['image_id']}.jpg"}, "image_id": f"copy-{row['image_id']}"}


@pytest.fixture(scope="module")
def datasets_dir(ham10000_dir, tmp_path_factory):
    """Real: 12 lesions per class for train, 12 others for test. Synthetic `new`: 4 lesions per class that neither
    holds (new patients, no copies); synthetic `copies`: the issue's light copies (5 % crop, flip or 90° rotation,
    +15 % saturation, JPEG 70) of 21 training images. A second synthetic set holds only the new patients."""
    root = tmp_path_factory.mktemp("memorization")
    train, test, new = ham_rows(ham10000_dir, 12), ham_rows(ham10000_dir, 12, skip=12), ham_rows(ham10000_dir, 4, skip=24)
    write_dataset(root / "real", {"train": train, "test": test})
    sources = list(range(0, 84, 4))
    rng = np.random.default_rng(0)
    write_dataset(root / "syn", {"new": new, "copies": [copy_row(train[i], rng, "light") for i in sources]})
    write_dataset(root / "syn-new", {"new": new})
    return root, sources


@pytest.fixture(scope="module")
def report(datasets_dir):
    root, _ = datasets_dir
    return audit_memorization(root / "syn", root / "real", root / "audit", features="contrastive", contrastive=FAST, num_planted=84, progress=False)


def test_copies_are_caught_and_new_patients_are_flagged_at_the_nominal_rate(datasets_dir, report):
    root, sources = datasets_dir
    flagged = {(f["split"], f["row"]): f for f in report["flagged"]}
    caught = [r for r, source in enumerate(sources) if flagged.get(("copies", r), {}).get("nearest_train_row") == source]
    assert len(caught) >= 0.9 * len(sources)  # the issue measured 7 of 20 with the old audit
    low, high = wilson_interval(report["per_split"]["new"]["num_flagged"], 28)
    assert low <= 0.01 <= high  # new patients: flagged at a rate whose interval holds the nominal 1 %
    assert report["nominal_false_positive_rate"] == 0.01
    assert report["threshold_method"].startswith("split-conformal 0.99 quantile of 42 held-out real `test` images")
    fpr = report["false_positive_rate"]
    # measured on the other 42 held-out images; with 42 calibration images the threshold is their largest, which a
    # new image exceeds with probability 1/43 (and, this small, 3 or more of 42 with probability 0.12)
    assert fpr["n"] == 42 and fpr["count"] <= 3 and fpr["ci95"][0] <= fpr["value"] <= fpr["ci95"][1]
    assert report["excess"]["significant"] and report["excess"]["value"] > 0.3
    assert report["verdict"].startswith(f"{report['num_flagged']} of 49 synthetic images are above the threshold: about")
    # group-aware: each flag names the nearest image's lesion and all training rows of that lesion
    hit = flagged[("copies", caught[0])]
    assert hit["nearest_group"] and hit["group_train_rows"] == [sources[caught[0]]]
    on_disk = json.loads((root / "audit" / "memorization.json").read_text())
    assert on_disk["flagged"] == report["flagged"] and set(on_disk["definitions"]) >= {"false_positive_rate", "excess", "planted_copy_recall"}
    for picture in ("memorization_histogram.png", "memorization_closest_pairs.png"):
        assert (root / "audit" / picture).stat().st_size > 1000


def test_planted_copy_recall_is_measured_in_every_report(report):
    recall = report["planted_copy_recall"]
    assert set(recall) == {"light", "heavy"} and recall["light"]["n"] == recall["heavy"]["n"] == 84
    assert recall["light"]["value"] >= 0.9
    for share in recall.values():  # the interval brackets the share it is about
        assert share["ci95"][0] <= share["value"] <= share["ci95"][1] and share["count"] == round(share["value"] * 84)
    assert "84 rows of real `train`" in report["rows"]["planted"]


def test_new_patients_only_show_no_significant_excess(datasets_dir, report):
    root, _ = datasets_dir
    clean = audit_memorization(root / "syn-new", root / "real", root / "audit", features="contrastive", contrastive=FAST, num_planted=0, progress=False)
    assert clean["threshold"] == report["threshold"]  # same encoder (cached) and calibration
    assert not clean["excess"]["significant"] and clean["excess"]["p_value"] > 0.05
    assert clean["excess"]["ci95"][0] <= 0 <= clean["excess"]["ci95"][1]
    assert "no evidence of copying" in clean["verdict"] and clean["planted_copy_recall"] == {}
    # a fixed threshold skips the calibration, not the measurement
    fixed = audit_memorization(root / "syn-new", root / "real", root / "audit", features="contrastive", contrastive=FAST, threshold=-1.0, num_planted=0, progress=False)
    assert fixed["threshold_method"] == "fixed" and fixed["false_positive_rate"]["value"] == 1.0 and fixed["num_flagged"] == 28


def test_held_out_halves_share_no_group():
    groups = np.array(["a", "a", "b", "c", "c", "c", "d", "e"], dtype=object)
    first, second = halves_by_group(groups, seed=0)
    assert sorted(np.concatenate([first, second])) == list(range(8))
    assert not set(groups[first]) & set(groups[second])


def test_contrastive_embedding_ignores_flips_and_rotations(datasets_dir, report):
    from skinsynth.data import open_dataset

    root, _ = datasets_dir
    real = open_dataset(root / "real")
    encoder = ContrastiveFeatures.fit_or_load(real["train"], root / "audit", FAST, progress=False)  # cached by `report`
    image = real["train"][0]["image"].convert("RGB").resize((64, 64))
    variants = [image, image.transpose(0), image.rotate(90), image.rotate(270)]
    features = encoder.embed(variants)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(features @ features[0], 1.0, atol=1e-5)


def test_update_card_writes_the_report_into_the_dataset(datasets_dir, tmp_path):
    root, _ = datasets_dir
    classifier = tiny_classifier(tmp_path / "clf", CLASSES)
    report = audit_memorization(root / "syn-new", root / "real", tmp_path / "audit", features=f"classifier:{classifier}", num_planted=4, update_card=True, progress=False)
    assert report["features"] == f"classifier:{classifier}"
    assert json.loads((root / "syn-new" / "reports" / "memorization.json").read_text()) == report
    card = (root / "syn-new" / "README.md").read_text()
    assert "false-positive rate" in card and "planted" in card and "perfect generator" in card


def test_cli_prints_the_measured_rates_and_bad_input_exits_2(datasets_dir, ham10000_dir, tmp_path, capsys):
    root, _ = datasets_dir
    classifier = tiny_classifier(tmp_path / "clf", CLASSES)
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(root / "real"), "--features", f"classifier:{classifier}",
                 "--planted", "8", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "measured false-positive rate" in out and "planted-copy recall (heavy alterations)" in out and "synthetic images are above" in out
    assert (tmp_path / "a" / "memorization.json").is_file()
    # a real dataset without held-out images cannot measure its false-positive rate
    write_dataset(tmp_path / "train-only", {"train": ham_rows(ham10000_dir, 1)})
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(tmp_path / "train-only"), "--features", "contrastive", "--out", str(tmp_path / "b")]) == 2
    assert "held-out" in capsys.readouterr().err
    write_dataset(tmp_path / "empty", {"train": [], "test": ham_rows(ham10000_dir, 1)})
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(tmp_path / "empty"), "--features", "contrastive", "--out", str(tmp_path / "c")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(root / "real"), "--threshold", "2", "--out", str(tmp_path / "d")]) == 2
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(root / "real"), "--false-positive-rate", "0.7", "--out", str(tmp_path / "d")]) == 2
    with pytest.raises(SkinsynthError, match="classifier"):
        audit_memorization(root / "syn", root / "real", tmp_path / "e", features="classifier:", progress=False)
