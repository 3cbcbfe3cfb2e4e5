"""`skinsynth audit fidelity`: exact figures on planted cases, the shared-seed measures, the CLI and the card."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from skinsynth.audit.fidelity import audit_fidelity, shared_seed_measures
from skinsynth.cli import main
from skinsynth.generate import generate

from .audit_datasets import CLASSES, ham_rows, tiny_classifier, write_dataset
from .conftest import DEMO_RECIPE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def planted(ham10000_dir, tmp_path_factory):
    """A real dataset (test split: 4 lesions per class), a synthetic one made of exact copies of those images under
    their true labels, and two classifiers: one random, one that always answers `nv`."""
    root = tmp_path_factory.mktemp("fidelity")
    rows = ham_rows(ham10000_dir, per_class=4)
    real = write_dataset(root / "real", {"train": rows, "test": rows})
    synthetic = write_dataset(root / "synthetic", {"train": rows})
    random_classifier = tiny_classifier(root / "random", CLASSES, seed=3)
    always_nv = tiny_classifier(root / "nv", CLASSES, bias=[0.0 if name != "nv" else 5.0 for name in CLASSES])
    return {"real": real, "synthetic": synthetic, "random": random_classifier, "nv": always_nv, "labels": [row["label"] for row in rows]}


def test_copies_of_real_test_images_score_exactly_the_ceiling(planted, tmp_path):
    report = audit_fidelity(planted["synthetic"], [str(planted["random"])], tmp_path / "audit", real=planted["real"], seeds=0, progress=False)
    assert report["synthetic_fidelity"] == report["real_fidelity"]
    assert (tmp_path / "audit" / "fidelity.json").is_file() and "synthetic (prompted class)" in (tmp_path / "audit" / "fidelity.md").read_text()


def test_a_classifier_that_always_answers_one_class_gives_the_counted_figures(planted, tmp_path):
    report = audit_fidelity(planted["synthetic"], [str(planted["nv"])], tmp_path / "audit", seeds=0, progress=False)
    fidelity = report["synthetic_fidelity"]
    labels = np.array(planted["labels"])
    nv = CLASSES.index("nv")
    assert fidelity["per_class_recall"] == {name: (1.0 if name == "nv" else 0.0) for name in CLASSES}
    assert fidelity["balanced_accuracy"] == pytest.approx(1 / len(CLASSES))
    assert fidelity["top1"] == pytest.approx((labels == nv).mean())
    assert fidelity["n"] == len(labels)
    assert "real_fidelity" not in report and "shared_seeds" not in report


def test_shared_seed_measures_tell_a_seed_driven_model_from_a_class_driven_one():
    rng = np.random.default_rng(0)
    seeds = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(4)]
    classes = [Image.fromarray(np.full((8, 8, 3), 60 * c, np.uint8)) for c in range(3)]
    prompted = np.array([2, 0, 1])  # row i draws class prompted[i]
    # The seed decides: every class row shows the seed's picture, and the classifier sees the seed's class.
    blind = shared_seed_measures([seeds] * 3, np.array([[0, 1, 2, 0]] * 3), prompted)
    assert blind["seed_following"] == 1.0 and blind["class_to_seed_distance"] == 0.0
    assert blind["prompt_following"] == pytest.approx(4 / 12)  # only where the seed's class happens to be prompted
    # The class decides: each row is its class's picture whatever the seed, and is predicted as its class.
    faithful = shared_seed_measures([[classes[c]] * 4 for c in prompted], np.repeat(prompted[:, None], 4, axis=1), prompted)
    assert faithful["prompt_following"] == 1.0 and faithful["seed_following"] == pytest.approx(1 / 3)
    assert faithful["class_to_seed_distance"] is None  # no distance between seeds at all: the ratio is undefined


def test_cli_on_a_generated_dataset_reconstructs_draws_the_grid_and_updates_the_card(tiny_pipeline_dir, tmp_path, capsys):
    syn = tmp_path / "demo"
    generate(DEMO_RECIPE, str(tiny_pipeline_dir), syn, batch_size=8, progress=False)
    names = json.loads((syn / "generation.json").read_text())["recipe"]["classes"]
    classifier = tiny_classifier(tmp_path / "classifier", [c["name"] for c in names])
    assert main(["-q", "audit", "fidelity", str(syn), "--classifier", str(classifier), "--real", str(syn), "--real-split", "validation",
                 "--seeds", "3", "--out", str(tmp_path / "audit"), "--update-card"]) == 0
    printed = capsys.readouterr().out
    assert "real test, autoencoded" in printed and "prompt following" in printed
    report = json.loads((tmp_path / "audit" / "fidelity.json").read_text())
    assert (tmp_path / "audit" / report["model"]).resolve() == tiny_pipeline_dir.resolve()  # found in generation.json; named relative to the report
    assert report["reconstruction_fidelity"]["n"] == report["real_fidelity"]["n"] == 6
    shared = report["shared_seeds"]
    assert np.array(shared["predictions"]).shape == (3, 3) and 0 <= shared["prompt_following"] <= 1
    grid = Image.open(tmp_path / "audit" / "fidelity_grid.png")
    assert grid.height == 3 * 64 and grid.width > 3 * 64
    card = (syn / "README.md").read_text()
    assert "## Label fidelity" in card and "prompt following" in card


def test_bad_input_is_refused_before_anything_is_written(planted, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "fidelity", str(planted["synthetic"]), "--classifier", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert main(["audit", "fidelity", str(planted["synthetic"]), "--classifier", str(planted["nv"]), "--seeds", "-1", "--out", str(out)]) == 2
    wrong = tiny_classifier(tmp_path / "wrong", ["cat", "dog"])
    assert main(["audit", "fidelity", str(planted["synthetic"]), "--classifier", str(wrong), "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "cat" in errors[2]
    assert not out.exists()
