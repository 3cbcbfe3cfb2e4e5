"""Memorization audit: real training images planted in a synthetic set (flipped, rotated, re-compressed) are all
flagged, and images of other patients are not."""

import json

import numpy as np
import pytest
from .audit_datasets import CLASSES, ham_rows, planted_copy, tiny_classifier, write_dataset

from skinsynth.audit.features import ContrastiveConfig, ContrastiveFeatures
from skinsynth.audit.memorization import audit_memorization
from skinsynth.cli import main
from skinsynth.errors import SkinsynthError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ContrastiveConfig(steps=60, batch_size=32)
PLANTS = ["flip", "rotate", "jpeg"] * 3


@pytest.fixture(scope="module")
def datasets_dir(ham10000_dir, tmp_path_factory):
    """Real: 6 lesions per class for train and 6 others for validation. Synthetic: 9 planted copies of training
    images among 21 images of still other lesions, over two splits."""
    root = tmp_path_factory.mktemp("memorization")
    train, validation, others = ham_rows(ham10000_dir, 6), ham_rows(ham10000_dir, 6, skip=6), ham_rows(ham10000_dir, 3, skip=12)
    write_dataset(root / "real", {"train": train, "validation": validation})
    sources = list(range(0, 42, 5))[:9]
    copies = [planted_copy(train[i], how) for i, how in zip(sources, PLANTS)]
    write_dataset(root / "syn", {"train": copies[:6] + others[:12], "validation": copies[6:] + others[12:]})
    planted = {("train", r): sources[r] for r in range(6)} | {("validation", r): sources[6 + r] for r in range(3)}
    return root, planted


def test_planted_copies_are_flagged_and_other_patients_are_not(datasets_dir):
    root, planted = datasets_dir
    report = audit_memorization(root / "syn", root / "real", root / "audit", features="contrastive", contrastive=FAST, progress=False)
    flagged = {(f["split"], f["row"]): f["nearest_train_row"] for f in report["flagged"]}
    assert flagged == planted
    assert report["num_flagged"] == 9 and report["num_synthetic"] == 30 and report["num_train"] == 42
    assert report["rate"] == pytest.approx(9 / 30)
    assert report["threshold_method"].startswith("p95")
    assert set(report["per_class"]) == set(CLASSES)
    on_disk = json.loads((root / "audit" / "memorization.json").read_text())
    assert on_disk["flagged"] == report["flagged"]
    for picture in ("memorization_histogram.png", "memorization_closest_pairs.png"):
        assert (root / "audit" / picture).stat().st_size > 1000
    # the encoder is cached: a second audit with a fixed threshold reuses it and flags the same rows
    mtime = (root / "audit" / "contrastive-encoder" / "model.safetensors").stat().st_mtime_ns
    fixed = audit_memorization(root / "syn", root / "real", root / "audit", features="contrastive", contrastive=FAST, threshold=0.99, progress=False)
    assert (root / "audit" / "contrastive-encoder" / "model.safetensors").stat().st_mtime_ns == mtime
    assert {(f["split"], f["row"]) for f in fixed["flagged"]} == set(planted)
    assert fixed["threshold_method"] == "fixed"
    reverse = audit_memorization(root / "syn", root / "real", root / "audit", features="contrastive", contrastive=FAST, calibration="validation-to-train", progress=False)
    assert {(f["split"], f["row"]) for f in reverse["flagged"]} == set(planted)
    assert reverse["threshold_method"].startswith("p95 of real validation-to-train")


def test_contrastive_embedding_ignores_flips_and_rotations(datasets_dir):
    from skinsynth.data import open_dataset

    root, _ = datasets_dir
    real = open_dataset(root / "real")
    encoder = ContrastiveFeatures.fit_or_load(real["train"], root / "audit", FAST, progress=False)
    image = real["train"][0]["image"].convert("RGB").resize((64, 64))
    variants = [image, image.transpose(0), image.rotate(90), image.rotate(270)]
    features = encoder.embed(variants)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(features @ features[0], 1.0, atol=1e-5)


def test_update_card_writes_the_report_into_the_dataset(datasets_dir, tmp_path):
    root, _ = datasets_dir
    classifier = tiny_classifier(tmp_path / "clf", CLASSES)
    report = audit_memorization(root / "syn", root / "real", tmp_path / "audit", features=f"classifier:{classifier}", threshold=0.999, update_card=True, progress=False)
    assert report["features"] == f"classifier:{classifier}"
    assert json.loads((root / "syn" / "reports" / "memorization.json").read_text()) == report


def test_cli_runs_and_bad_input_exits_2(datasets_dir, ham10000_dir, tmp_path, capsys):
    root, _ = datasets_dir
    classifier = tiny_classifier(tmp_path / "clf", CLASSES)
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(root / "real"), "--features", f"classifier:{classifier}", "--out", str(tmp_path / "a")]) == 0
    assert "synthetic images" in capsys.readouterr().out
    assert (tmp_path / "a" / "memorization.json").is_file()
    # a real dataset without a validation split cannot calibrate the threshold
    write_dataset(tmp_path / "train-only", {"train": ham_rows(ham10000_dir, 1)})
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(tmp_path / "train-only"), "--features", "contrastive", "--out", str(tmp_path / "b")]) == 2
    assert "validation" in capsys.readouterr().err
    # an empty real training split
    write_dataset(tmp_path / "empty", {"train": [], "validation": ham_rows(ham10000_dir, 1)})
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(tmp_path / "empty"), "--features", "contrastive", "--out", str(tmp_path / "c")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["-q", "audit", "memorization", str(root / "syn"), "--train", str(root / "real"), "--threshold", "2", "--out", str(tmp_path / "d")]) == 2
    with pytest.raises(SkinsynthError, match="calibration"):
        audit_memorization(root / "syn", root / "real", tmp_path / "e", calibration="sideways", progress=False)
    with pytest.raises(SkinsynthError, match="classifier"):
        audit_memorization(root / "syn", root / "real", tmp_path / "e", features="classifier:", progress=False)
