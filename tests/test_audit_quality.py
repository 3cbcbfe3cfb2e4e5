"""Distribution quality audit end to end: a report overall and per class beside the real-vs-real baseline."""

import json

import pytest
from .audit_datasets import CLASSES, ham_rows, tiny_classifier, write_dataset

from skinsynth.audit.quality import audit_quality, real_halves
from skinsynth.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def quality_dir(ham10000_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    write_dataset(root / "real", {"train": ham_rows(ham10000_dir, 12)})
    write_dataset(root / "syn", {"train": ham_rows(ham10000_dir, 4, skip=12), "validation": ham_rows(ham10000_dir, 2, skip=16)})
    tiny_classifier(root / "clf", CLASSES)
    return root


def test_real_halves_split_every_class_in_two():
    import numpy as np

    labels = np.array([0] * 6 + [1] * 5 + [2])
    a, b = real_halves(labels, seed=0)
    assert sorted(np.concatenate([a, b])) == list(range(12))
    assert list(np.bincount(labels[a], minlength=3)) == [3, 2, 0] and list(np.bincount(labels[b], minlength=3)) == [3, 3, 1]


def test_quality_report_overall_and_per_class(quality_dir, tmp_path):
    report = audit_quality(quality_dir / "syn", quality_dir / "real", tmp_path, features=f"classifier:{quality_dir / 'clf'}", kid_subsets=5, progress=False)
    assert report["num_synthetic"] == 42 and report["num_real"] == 84 and report["num_compared"] == 42
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
