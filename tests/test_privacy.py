"""Private by default: `generate --filter-copies` remakes every near copy of a training image (real HAM10000 photos),
deterministically and with exact counts, and `push` refuses a fine-tuned model's dataset that nothing checked for
copies, before any request to the Hub."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard

from skinsynth.audit.copy_filter import COPY, COPY_COLUMN, CopyFilterConfig, build_copy_filter
from skinsynth.audit.keypoints import KeypointConfig, KeypointMatcher
from skinsynth.audit.matching import reference_cache_dir, share
from skinsynth.audit.memorization import DEFINITIONS, excess
from skinsynth.cli import main
from skinsynth.errors import PrivacyError
from skinsynth.generate import generate
from skinsynth.hub import push_to_hub
from skinsynth.pipeline import load_pipeline
from skinsynth.plan import attempt_seed, plan
from skinsynth.privacy import check_publishable
from skinsynth.recipe import load_recipe
from skinsynth.shards import atomic_write_json

from .audit_datasets import ham_rows, write_dataset
from .conftest import DEMO_RECIPE
from .test_generate import read_rows
from .test_hub import FakeHub

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 128  # px: a 64 px copy keeps too few keypoints of a 600x450 photo to be told from new lesions on 42 training images
KEYPOINTS = KeypointConfig(vocabulary=512, candidates=20)  # ample for 42 training images, and quick


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """The copy check's cache in a folder of this test module, shared by its tests (so the second run reuses it)."""
    monkeypatch.setenv("SKINSYNTH_CACHE", str(tmp_path_factory.getbasetemp() / "skinsynth-cache"))


@pytest.fixture(scope="module")
def real(ham10000_dir, tmp_path_factory) -> Path:
    """Real: 6 lesions per class for train, 6 others for test (their held-out split)."""
    return write_dataset(tmp_path_factory.mktemp("privacy") / "real", {"train": ham_rows(ham10000_dir, 6), "test": ham_rows(ham10000_dir, 6, skip=6)})


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    """The demo recipe at 128 px, 2 steps, 4 train and 2 validation images per class, 3 images per shard."""
    recipe = yaml.safe_load(DEMO_RECIPE.read_text())
    recipe["generation"].update(width=SIZE, height=SIZE, num_inference_steps=2, shard_size=3, max_attempts=3)
    recipe["splits"] = {"train": {"per_class": 4}, "validation": {"per_class": 2}}
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def training_pixels(real: Path, row: int) -> np.ndarray:
    from skinsynth.data import open_dataset

    image = open_dataset(real)["train"][row]["image"].convert("RGB").resize((SIZE, SIZE))
    return np.asarray(image, np.float32) / 255


class CopyingPipeline:
    """The tiny pipeline, except that the planned seeds of some images give back a training photo (a memorizing model)."""

    def __init__(self, pipe, copies: dict[int, np.ndarray]):
        self.pipe, self.copies = pipe, copies

    def __call__(self, generator, **kwargs):
        output = self.pipe(generator=generator, **kwargs)
        for i, g in enumerate(generator):
            if g.initial_seed() in self.copies:
                output.images[i] = self.copies[g.initial_seed()]
        return output


@pytest.fixture(scope="module")
def copying(tiny_pipeline_dir, recipe_file, real):
    """The pipeline, its model info recording `real` as its training data (as `skinsynth finetune` does), and the
    planned jobs that get a training photo: every third image of each split."""
    pipe, info = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    info.finetune = {"method": "full", "training_data": str(real)}
    jobs = [job for split_plan in plan(load_recipe(recipe_file)).values() for job in split_plan.jobs(0, len(split_plan))][::3]
    # rows 7k + 1 share 11 to 39 verified keypoints with themselves at 128 px; row 28 shares none (a featureless photo:
    # a copy no keypoint check sees, one of the misses the planted-copy recall counts)
    copies = {job.seed: training_pixels(real, 7 * k + 1) for k, job in enumerate(jobs)}
    return CopyingPipeline(pipe, copies), info, jobs


def num_rows(root: Path) -> int:
    return sum(split["num_rows"] for split in json.loads((root / "generation.json").read_text())["splits"].values())


def shard_hashes(out: Path) -> dict:
    manifest = json.loads((out / "generation.json").read_text())
    return {shard["file"]: shard["sha256"] for split in manifest["splits"].values() for shard in split["shards"]}


def test_planted_copies_are_all_remade_with_their_next_seed(copying, recipe_file, real, tmp_path):
    pipe, info, copied_jobs = copying
    recipe = load_recipe(recipe_file)
    out = tmp_path / "out"
    config = CopyFilterConfig(keypoints=KEYPOINTS, num_planted=14)  # no REAL: the model's recorded training data
    manifest = generate(recipe, "copying", out, batch_size=2, device="cpu", progress=False, pipeline=(pipe, info), copy_filter=config)

    checked = manifest["copy_filter"]
    assert (out / checked["real"]).resolve() == real.resolve() and checked["num_train"] == 42 and checked["features"] == "keypoints"
    assert manifest["rejections"] == {COPY: len(copied_jobs)} == {COPY: checked["rejections"]}
    per_class = {}
    for job in copied_jobs:
        per_class[recipe.label_names[job.label]] = per_class.get(recipe.label_names[job.label], 0) + 1
    assert checked["rejections_per_class"] == dict(sorted(per_class.items())) == manifest["rejections_per_class"][COPY]
    assert set(checked["planted_copy_recall"]) == {"light", "heavy"} and checked["false_positive_rate"]["n"] > 0

    rows = read_rows(out)
    by_seed = {(split, row["seed"]): row for split, split_rows in rows.items() for row in split_rows}
    for job in copied_jobs:  # each copy was replaced by the image of its next seed, which is kept
        assert (job.split, job.seed) not in by_seed and (job.split, attempt_seed(job.seed, 1)) in by_seed
    scores = [row[COPY_COLUMN] for split_rows in rows.values() for row in split_rows]
    assert len(scores) == sum(len(r) for r in rows.values()) == 18 and max(scores) <= checked["threshold"]

    # the same command again, into a new folder, from the cached features and calibration: the same shards
    assert list(reference_cache_dir().glob("*/keypoints.npz")) and list(reference_cache_dir().glob("*/calibration-*.json"))
    again = generate(recipe, "copying", tmp_path / "again", batch_size=2, device="cpu", progress=False, pipeline=(pipe, info), copy_filter=config)
    assert shard_hashes(tmp_path / "again") == shard_hashes(out) and again["copy_filter"] == manifest["copy_filter"]

    # an interrupted run (a shard and its record lost) resumes into the same shards and counts
    (out / "generation.json").write_text(json.dumps({**manifest, "status": "incomplete"}))
    first = sorted((out / ".skinsynth" / "shards").glob("*.json"))[0]
    (out / "data" / first.name.replace(".json", ".arrow")).unlink()
    first.unlink()
    resumed = generate(recipe, "copying", out, batch_size=2, device="cpu", progress=False, pipeline=(pipe, info), copy_filter=config)
    assert shard_hashes(out) == shard_hashes(tmp_path / "again") and resumed["copy_filter"]["rejections"] == len(copied_jobs)

    card = DatasetCard.load(out / "README.md").text
    assert "**Copies were refused during generation**" in card and f"{len(copied_jobs)} generated images scored above the threshold" in card
    assert f"`{checked['real']}`, split `train`: 42 images" in card and "| planted-copy recall (heavy) |" in card and "What the check does not catch" in card


def test_saved_keypoints_score_like_fresh_ones(real, tmp_path):
    from skinsynth.data import open_dataset

    train = open_dataset(real)["train"]
    fresh = KeypointMatcher(train, KEYPOINTS, progress=False)
    fresh.save(tmp_path)
    loaded = KeypointMatcher.load(tmp_path, KEYPOINTS)
    queries = [image.resize((SIZE, SIZE)) for image in train.select(range(0, 42, 6))["image"]]
    assert np.array_equal(fresh.nearest_images(queries)[0], loaded.nearest_images(queries)[0])
    assert (loaded.nearest_images(queries)[1] == np.arange(0, 42, 6)).all()


def test_a_model_without_recorded_training_data_needs_the_real_dataset():
    with pytest.raises(Exception, match="--filter-copies REAL"):
        build_copy_filter(CopyFilterConfig(), {"model": "tiny"})


# ---------------------------------------------------------------- push gate


@pytest.fixture(scope="module")
def tiny_dataset(tiny_pipeline_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-dataset") / "demo"
    generate(DEMO_RECIPE, str(tiny_pipeline_dir), out, limit=4, batch_size=4, progress=False)
    return out


@pytest.fixture
def fine_tuned(tiny_dataset, real, tmp_path) -> Path:
    """The tiny dataset as if its model had been fine-tuned on `real` (its manifest records it, as generate does)."""
    root = Path(shutil.copytree(tiny_dataset, tmp_path / "demo"))
    manifest = json.loads((root / "generation.json").read_text())
    manifest["model"]["finetune"] = {"method": "full", "training_data": str(real)}
    atomic_write_json(root / "generation.json", manifest)
    return root


def test_push_refuses_an_unaudited_fine_tuned_dataset_before_any_request(fine_tuned, real, monkeypatch, capsys, tmp_path):
    hub = FakeHub().install(monkeypatch)
    assert main(["push", str(fine_tuned), "me/demo"]) == 2
    err = capsys.readouterr().err
    assert f"nothing checked `{fine_tuned}` for copies of the images its model's pipeline was trained on" in err
    assert f"skinsynth audit memorization {fine_tuned} --train {real}" in err and "--allow-unaudited" in err
    assert hub.calls == []

    # the audit the message names, then the same push
    assert main(["-q", "audit", "memorization", str(fine_tuned), "--train", str(real), "--out", str(tmp_path / "audit"), "--update-card", "--planted", "14"]) == 0
    assert main(["-q", "push", str(fine_tuned), "me/demo"]) == 0
    card = hub.refs["main"]["README.md"]["data"].decode()
    assert f"Memorization was checked: 0 of {num_rows(fine_tuned)} images" in card and "planted-copy recall of" in card and "What the check does not catch" in card
    assert "Published without" not in card


def test_allow_unaudited_publishes_and_the_card_says_so(fine_tuned, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    push_to_hub(fine_tuned, "me/demo", allow_unaudited=True, progress=False)
    card = hub.refs["main"]["README.md"]["data"].decode()
    assert "**Published without a passing copy check** (`skinsynth push --allow-unaudited`)" in card and "**Memorization was not checked**" in card
    assert json.loads(hub.refs["main"]["generation.json"]["data"])["privacy_override"]["allow_unaudited"] is True


def test_a_tiny_pipeline_dataset_needs_no_audit(tiny_dataset, monkeypatch, tmp_path):
    hub = FakeHub().install(monkeypatch)
    push_to_hub(shutil.copytree(tiny_dataset, tmp_path / "demo"), "me/demo", progress=False)
    card = hub.refs["main"]["README.md"]["data"].decode()
    assert "No copy check was needed: the generating model" in card and "was not fine-tuned" in card


def test_an_audit_that_flags_images_or_saw_another_dataset_blocks_the_push(fine_tuned):
    report = {"num_synthetic": num_rows(fine_tuned), "num_train": 42, "num_flagged": 1, "rate": 1 / 12, "real": "real", "threshold": 9.0, "threshold_method": "fixed",
              "false_positive_rate": share(1, 50), "excess": excess(1, 12, 1, 50), "planted_copy_recall": {}, "definitions": DEFINITIONS, "verdict": "v"}
    (fine_tuned / "reports").mkdir()
    atomic_write_json(fine_tuned / "reports" / "memorization.json", report)
    with pytest.raises(PrivacyError, match="flags 1 images as near copies.*--filter-copies"):
        check_publishable(fine_tuned)
    atomic_write_json(fine_tuned / "reports" / "memorization.json", {**report, "num_flagged": 0, "num_synthetic": 40})
    with pytest.raises(PrivacyError, match=f"saw 40 images and the dataset holds {num_rows(fine_tuned)}"):
        check_publishable(fine_tuned)
    atomic_write_json(fine_tuned / "reports" / "memorization.json", {**report, "num_flagged": 0, "excess": excess(12, 12, 1, 50)})
    with pytest.raises(PrivacyError, match="significantly more close images.*generate it again with `skinsynth generate … --filter-copies`"):
        check_publishable(fine_tuned)  # an audit run again would say the same: the images must be remade
    atomic_write_json(fine_tuned / "reports" / "memorization.json", {**report, "num_flagged": 0})
    assert check_publishable(fine_tuned).kind == "audit"



def test_a_check_that_searched_other_data_than_the_models_blocks_the_push(fine_tuned, real, tiny_dataset, tmp_path):
    """An audit or copy filter run against the wrong real dataset proves nothing about the model's training images."""
    report = {"num_synthetic": num_rows(fine_tuned), "num_train": 42, "num_flagged": 0, "rate": 0.0, "threshold": 9.0, "threshold_method": "fixed",
              "false_positive_rate": share(1, 50), "excess": excess(0, 12, 1, 50), "planted_copy_recall": {}, "definitions": DEFINITIONS, "verdict": "v"}
    reports = fine_tuned / "reports"
    reports.mkdir()
    other = tiny_dataset  # any other dataset folder
    atomic_write_json(reports / "memorization.json", {**report, "real": os.path.relpath(other, reports)})
    with pytest.raises(PrivacyError, match=f"searched `{re.escape(os.path.relpath(other, reports))}`, but the model was trained on `{re.escape(str(real))}`.*--train {re.escape(str(real))}"):
        check_publishable(fine_tuned)
    atomic_write_json(reports / "memorization.json", {**report, "real": os.path.relpath(real, reports)})  # as `--update-card` writes it
    assert check_publishable(fine_tuned).kind == "audit"

    (reports / "memorization.json").unlink()
    manifest = json.loads((fine_tuned / "generation.json").read_text())
    manifest["copy_filter"] = {"real": os.path.relpath(other, fine_tuned), "num_train": 42}
    atomic_write_json(fine_tuned / "generation.json", manifest)
    with pytest.raises(PrivacyError, match=f"--filter-copies` searched .*generate it again with `--filter-copies {re.escape(str(real))}`"):
        check_publishable(fine_tuned)
    manifest["copy_filter"]["real"] = os.path.relpath(real, fine_tuned)
    atomic_write_json(fine_tuned / "generation.json", manifest)
    assert check_publishable(fine_tuned).kind == "copy_filter"
