"""Distribution quality audit end to end: a report overall and per class beside the real-vs-real baseline."""

import json

import pytest

from skinsynth.audit.features import ContrastiveConfig, split_digest
from skinsynth.audit.quality import audit_quality, real_parts
from skinsynth.cli import main
from skinsynth.data import open_dataset

from .audit_datasets import CLASSES, ham_rows, tiny_classifier, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def quality_dir(ham10000_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    write_dataset(root / "real", {"train": ham_rows(ham10000_dir, 12)})
    write_dataset(root / "syn", {"train": ham_rows(ham10000_dir, 4, skip=12), "validation": ham_rows(ham10000_dir, 2, skip=16)})
    tiny_classifier(root / "clf", CLASSES)
    return root


def test_real_parts_split_every_class_by_group():
    import numpy as np

    labels = np.array([0] * 6 + [1] * 6)
    groups = np.array(["a", "a", "b", "c", "d", "e", "f", "g", "g", "h", "i", "j"])
    parts = real_parts(labels, groups, seed=0)
    assert sorted(np.concatenate(list(parts.values()))) == list(range(12))
    assert not set(groups[parts["half_a"]]) & set(groups[parts["half_b"]])  # no lesion in both halves
    assert set(labels[parts["half_a"]]) == set(labels[parts["half_b"]]) == {0, 1}
    three = real_parts(labels, groups, seed=0, encoder_fraction=1 / 3)
    assert set(three) == {"half_a", "half_b", "encoder"} and len(three["encoder"]) >= 2
    for x, y in (("half_a", "half_b"), ("half_a", "encoder"), ("half_b", "encoder")):
        assert not set(groups[three[x]]) & set(groups[three[y]])


def test_quality_report_overall_and_per_class(quality_dir, tmp_path):
    report = audit_quality(quality_dir / "syn", quality_dir / "real", tmp_path, features=f"classifier:{quality_dir / 'clf'}", kid_subsets=5, progress=False)
    assert report["num_synthetic"] == 42 and report["num_real"] == 84 and report["num_compared"] == 42
    assert report["rows"]["encoder_rows"] == [] and len(report["rows"]["half_a_rows"]) + len(report["rows"]["half_b_rows"]) == 84
    assert set(report["definitions"]) >= set(report["overall"]) and "raw" in report["definitions"]["fd"]
    for section in ("overall", "real_vs_real"):
        assert set(report[section]) == {"fd", "kid", "kid_std", "precision", "recall", "density", "coverage"}
        assert all(value is not None for value in report[section].values())
    assert set(report["per_class"]) == set(CLASSES) == set(report["per_class_real_vs_real"])
    assert report["per_class"]["mel"]["fd"] is not None  # 6 synthetic vs 6 real per half
    assert json.loads((tmp_path / "quality.json").read_text()) == report
    assert (tmp_path / "quality_per_class.png").stat().st_size > 1000


def test_quality_cli_and_class_mismatch(quality_dir, ham10000_dir, tmp_path, capsys):
    assert main(["-q", "audit", "quality", str(quality_dir / "syn"), "--real", str(quality_dir / "real"), "--features", f"classifier:{quality_dir / 'clf'}", "--out", str(tmp_path / "q")]) == 0
    assert "real-vs-real" in capsys.readouterr().out
    rows = ham_rows(ham10000_dir, 1)
    write_dataset(tmp_path / "other", {"train": rows}, names=[f"x{i}" for i in range(7)])
    assert main(["-q", "audit", "quality", str(tmp_path / "other"), "--real", str(quality_dir / "real"), "--features", "contrastive", "--out", str(tmp_path / "r")]) == 2
    assert "not classes of the real dataset" in capsys.readouterr().err


def test_contrastive_encoder_trains_on_rows_outside_both_halves(quality_dir, tmp_path):
    """No leakage into the baseline: the encoder's training rows are in neither half, and the cached encoder is
    identified by exactly those rows' images."""
    import json

    config = ContrastiveConfig(image_size=16, width=4, steps=2, batch_size=8)
    report = audit_quality(quality_dir / "syn", quality_dir / "real", tmp_path, features="contrastive", contrastive=config, kid_subsets=2, progress=False)
    rows = report["rows"]
    encoder, a, b = set(rows["encoder_rows"]), set(rows["half_a_rows"]), set(rows["half_b_rows"])
    assert encoder and not encoder & (a | b) and not a & b and len(encoder | a | b) == 84
    assert report["num_real"] == len(a | b) and "contrastive encoder, in no half" in rows["encoder"]
    real = open_dataset(quality_dir / "real")["train"]
    cached = json.loads((tmp_path / "contrastive-encoder" / "config.json").read_text())
    assert cached["identity"]["train_sha256"] == split_digest(real.select(sorted(encoder)))
    groups = real["group_id"]
    assert not {groups[i] for i in encoder} & {groups[i] for i in a | b}


def test_quality_card_section_explains_every_number(quality_dir, tmp_path):
    import shutil

    syn = shutil.copytree(quality_dir / "syn", tmp_path / "syn")
    audit_quality(syn, quality_dir / "real", tmp_path / "q", features=f"classifier:{quality_dir / 'clf'}", kid_subsets=2, update_card=True, progress=False)
    card = (syn / "README.md").read_text()
    assert "real vs real (a perfect generator)" in card and "**fd**: Fréchet distance" in card and "Rows used:" in card
