"""End-to-end benchmark runs on a tiny HAM10000 subset, a tiny synthetic set and a tiny ResNet, at 32 px on CPU."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re

import datasets
import numpy as np
import pytest
from PIL import Image

from skinsynth.benchmark import Arm, benchmark
from skinsynth.benchmark.conditions import image_digests
from skinsynth.benchmark.train import decode
from skinsynth.cli import main
from skinsynth.errors import DatasetError, OutputError, PipelineError, RecipeError, SkinsynthError
from skinsynth.shards import write_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["melanocytic_nevus", "melanoma", "benign_keratosis", "basal_cell_carcinoma", "actinic_keratosis", "vascular_lesion", "dermatofibroma"]
DX = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
LESIONS = {"train": range(0, 6), "validation": range(6, 9), "test": range(9, 12)}  # lesion positions per class


def real_features() -> datasets.Features:
    string = datasets.Value("string")
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "group_id": string, "body_site": string,
                              "sex": string, "age": string, "dx": string, "dx_type": string, "image_id": string})


def build_real(ham10000_dir, out, splits=("train", "validation", "test")):
    """A real dataset in the `skinsynth prepare` layout, split by lesion: 6 / 3 / 3 lesions per diagnosis."""
    with open(ham10000_dir / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lesions = {dx: list(dict.fromkeys(r["lesion_id"] for r in rows if r["dx"] == dx)) for dx in DX}
    for split in splits:
        chosen = {lesion for dx in DX for lesion in (lesions[dx][i] for i in LESIONS[split])}
        split_rows = [{
            "image": {"bytes": (ham10000_dir / "images" / f"{r['image_id']}.jpg").read_bytes(), "path": f"{r['image_id']}.jpg"},
            "label": DX.index(r["dx"]), "group_id": r["lesion_id"], "body_site": r["localization"], "sex": r["sex"], "age": r["age"] or None,
            "dx": r["dx"], "dx_type": r["dx_type"], "image_id": r["image_id"],
        } for r in rows if r["lesion_id"] in chosen]
        write_split(out, split, split_rows, real_features(), shard_size=1000)
    return out


def build_synthetic(out, names=tuple(n.replace("_", " ").capitalize() for n in CLASSES), per_class=6):
    """Noise images, `per_class` of each class, labelled with display names ("Melanocytic nevus")."""
    rng = np.random.default_rng(0)
    rows = []
    for label in range(len(names)):
        for i in range(per_class):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
            rows.append({"image": {"bytes": buffer.getvalue(), "path": f"{label}-{i}.png"}, "label": label})
    write_split(out, "train", rows, datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))}), shard_size=1000)
    return out


@pytest.fixture(scope="module")
def real_dir(ham10000_dir, tmp_path_factory):
    return build_real(ham10000_dir, tmp_path_factory.mktemp("real") / "ham")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    return build_synthetic(tmp_path_factory.mktemp("syn") / "synthetic")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A ResNet of about 7k parameters, config only: trained from scratch."""
    from transformers import ResNetConfig

    path = tmp_path_factory.mktemp("model") / "resnet-tiny"
    ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def arms_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arms") / "arms.yaml"
    path.write_text("arms:\n  - {name: real, real_per_class: 4}\n  - {name: hybrid, real_per_class: 2, synthetic_per_class: 3}\n  - {name: synthetic, synthetic_per_class: 5}\n")
    return path


def run(real_dir, synthetic_dir, model_dir, arms_file, out, **overrides):
    options = {"model": str(model_dir), "out": out, "arms": arms_file, "image_size": 32, "epochs": 2, "batch_size": 8, "seeds": 2, "workers": 0, "progress": False}
    return benchmark(str(real_dir), [str(synthetic_dir)], **{**options, **overrides})


@pytest.fixture(scope="module")
def recorded(real_dir, synthetic_dir, model_dir, arms_file, tmp_path_factory):
    """One benchmark run, with every training set the classifier was given."""
    from skinsynth.benchmark import train

    seen, original, build = [], train.train_and_predict, train.ImageRows.__init__
    def spy(model_factory, train_set, *args, **kwargs):
        seen.append(train_set)
        return original(model_factory, train_set, *args, **kwargs)

    def keep_parts(self, parts, *args, **kwargs):  # the datasets a training set's rows come from, for the leak test
        build(self, parts, *args, **kwargs)
        self.parts = parts

    patch = pytest.MonkeyPatch()
    patch.setattr(train, "train_and_predict", spy)
    patch.setattr(train.ImageRows, "__init__", keep_parts)
    out = tmp_path_factory.mktemp("bench") / "out"
    try:
        summary = run(real_dir, synthetic_dir, model_dir, arms_file, out)
    finally:
        patch.undo()
    return summary, seen, out


def test_arms_hold_exactly_the_asked_counts(recorded):
    summary, seen, _ = recorded
    arms = {a["name"]: a for a in summary["arms"]}
    assert (arms["real"]["real_per_class"], arms["real"]["synthetic_per_class"]) == (4, 0)
    assert (arms["hybrid"]["real_per_class"], arms["hybrid"]["synthetic_per_class"]) == (2, 3)
    assert (arms["synthetic"]["real_per_class"], arms["synthetic"]["synthetic_per_class"]) == (0, 5)
    assert [len(s) for s in seen] == [28, 28, 35, 35, 35, 35]  # 3 arms x 2 seeds, 7 classes
    for train_set, per_class in zip(seen, [4, 4, 5, 5, 5, 5]):
        assert np.bincount(train_set.labels, minlength=7).tolist() == [per_class] * 7


def test_no_validation_or_test_image_reaches_training(recorded, real_dir):
    _, seen, _ = recorded
    real = datasets.load_dataset(str(real_dir))
    held_out_ids = set(real["validation"]["image_id"]) | set(real["test"]["image_id"])
    held_out = set(image_digests(real["validation"])) | set(image_digests(real["test"]))
    held_out_lesions = set(real["validation"]["group_id"]) | set(real["test"]["group_id"])
    for train_set in seen:
        sources = [ds.cast_column("image", datasets.Image(decode=False)) for ds, _, _ in train_set.parts]
        for index, (source, row, _) in enumerate(train_set.items):
            stored = sources[source][int(row)]["image"]
            assert stored["path"].removesuffix(".jpg") not in held_out_ids
            assert np.array_equal(train_set.cache[index], np.asarray(decode(stored["bytes"], train_set.size)))  # the sampled row's image
            digest = image_digests(sources[source].select([int(row)]))[0]
            assert digest == hashlib.sha1(stored["bytes"]).hexdigest() and digest not in held_out
        real_rows = train_set.items[train_set.items[:, 0] == 0, 1]
        assert not {real["train"][int(r)]["group_id"] for r in real_rows} & held_out_lesions


def test_outputs_written(recorded, real_dir):
    summary, _, out = recorded
    for name in ("results.json", "results.csv", "results.md", "config.json", "accuracy_vs_synthetic_share.png", "confusion-real.png", "confusion-hybrid.png", "confusion-synthetic.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(summary))
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["arm"], r["seed"]) for r in rows[:6]] == [("real", "0"), ("real", "1"), ("real", "mean"), ("real", "std"), ("real", "ci95_low"), ("real", "ci95_high")]
    assert len(rows) == 3 * 6
    table = (out / "results.md").read_text()
    assert "| real | 4 | 0 |" in table and "| Arm | Real / class | Synthetic / class | Balanced acc. (%) | Top-1 (%) |" in table and "Top-3 (%)" in table
    real = datasets.load_dataset(str(real_dir))
    counts = np.bincount(real["test"]["label"], minlength=7)
    largest = int(np.argmax(np.bincount(real["train"]["label"], minlength=7)))  # the real train split's most frequent class
    majority = summary["baselines"]["majority"]
    assert majority["class"] == CLASSES[largest] and majority["top1"] == counts[largest] / counts.sum()
    assert majority["balanced_accuracy"] == pytest.approx(1 / 7) and summary["baselines"]["chance"]["top3"] == pytest.approx(3 / 7)
    assert f"| *majority class (`{CLASSES[largest]}`)* | | | 14.29 | {100 * counts[largest] / counts.sum():.2f} |" in table
    assert "| *chance (uniform guess)* | | | 14.29 | 14.29 | 28.57 | 42.86 | |" in table and "Early stopping by validation balanced_accuracy." in table
    # subgroups: the real test split's body site, sex and age band, each with counts, in results, table and plots
    assert summary["subgroup_attributes"] == ["body_site", "sex", "age"]
    test = datasets.load_dataset(str(real_dir))["test"]
    male = np.array(test["sex"]) == "male"
    runs = [json.loads((out / "runs" / f"real-seed{s}.json").read_text()) for s in (0, 1)]
    by_hand = []
    for saved in runs:
        y, predicted = np.array(saved["test_labels"])[male], np.array(saved["test_scores"]).argmax(axis=1)[male]
        by_hand.append(np.mean([(predicted[y == c] == c).mean() for c in np.unique(y)]))
    male_metrics = summary["arms"][0]["subgroups"]["sex"]["male"]
    assert male_metrics["count"] == male.sum() and male_metrics["balanced_accuracy"]["mean"] == pytest.approx(np.mean(by_hand))
    assert sum(g["count"] for g in summary["arms"][0]["subgroups"]["age"].values()) == summary["test_images"]
    assert "Balanced accuracy (%) by `sex`" in table and f"| male | {male.sum()} |" in table
    assert (out / "subgroups-age.png").is_file() and (out / "subgroups-body_site.png").is_file()
    # the Hub's model-index form, one entry per arm, as in the saved models' cards
    assert [entry["name"] for entry in summary["model-index"]] == ["real", "hybrid", "synthetic"]
    hybrid = {m["name"]: m["value"] for m in summary["model-index"][1]["results"][0]["metrics"]}
    assert hybrid["Balanced accuracy"] == round(summary["arms"][1]["metrics"]["balanced_accuracy"]["mean"], 6)
    with Image.open(out / "accuracy_vs_synthetic_share.png") as image:
        assert image.format == "PNG" and image.width > 300
    arm = summary["arms"][1]
    assert arm["synthetic_share"] == pytest.approx(3 / 5)
    assert set(arm["metrics"]) == {"top1", "top2", "top3", "balanced_accuracy", "macro_f1"}
    for metric in arm["metrics"].values():
        assert 0 <= metric["ci95"][0] <= metric["ci95"][1] <= 1 and metric["std"] >= 0
    assert np.sum(arm["confusion_matrix"]) == 2 * summary["test_images"]


def test_seeded_run_repeats_exactly_with_any_number_of_workers(recorded, real_dir, synthetic_dir, model_dir, arms_file, tmp_path):
    summary, _, out = recorded
    again = run(real_dir, synthetic_dir, model_dir, arms_file, tmp_path / "again", workers=1, seeds=1)
    first = json.loads((out / "runs" / "hybrid-seed0.json").read_text())
    second = json.loads((tmp_path / "again" / "runs" / "hybrid-seed0.json").read_text())
    assert first["test_scores"] == second["test_scores"] and first["history"] == second["history"]
    assert again["arms"][0]["runs"][0]["top1"] == summary["arms"][0]["runs"][0]["top1"]
    assert first["test_scores"] != json.loads((out / "runs" / "hybrid-seed1.json").read_text())["test_scores"]


def test_finished_runs_are_reused(recorded, real_dir, synthetic_dir, model_dir, arms_file, monkeypatch):
    summary, _, out = recorded
    from skinsynth.benchmark import train

    monkeypatch.setattr(train, "train_and_predict", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert run(real_dir, synthetic_dir, model_dir, arms_file, out)["arms"] == summary["arms"]
    # the real baseline alone (no --synthetic) leaves out the synthetic arms and reuses its runs too
    baseline = benchmark(str(real_dir), [], model=str(model_dir), out=out, arms=arms_file, image_size=32, epochs=2, batch_size=8, seeds=2, workers=0, progress=False)
    assert [a["name"] for a in baseline["arms"]] == ["real"] and baseline["arms"][0] == summary["arms"][0]


def test_update_card_writes_the_report_into_the_card(real_dir, model_dir, tiny_pipeline_dir, tmp_path):
    from skinsynth import generate
    from skinsynth.recipe import parse_recipe

    recipe = parse_recipe({
        "name": "ham-twin", "classes": [{"name": name} for name in CLASSES], "prompts": {"templates": ["a photo of {class}"]},
        "splits": {"train": {"per_class": 1}}, "generation": {"height": 32, "width": 32, "num_inference_steps": 1},
    })
    synthetic = tmp_path / "synthetic"
    generate(recipe, str(tiny_pipeline_dir), synthetic, device="cpu", progress=False)
    arms = tmp_path / "arms.yaml"
    arms.write_text("arms: [{name: mixed, real_per_class: 1, synthetic_per_class: 1}]\n")
    run(real_dir, synthetic, model_dir, arms, tmp_path / "out", epochs=1, seeds=1, update_card=str(synthetic), command="skinsynth benchmark …")
    report = json.loads((synthetic / "reports" / "benchmark.json").read_text())
    assert set(report) == {"model", "real", "synthetic", "image_size", "epochs", "seeds", "command", "headline", "baselines", "subgroup_attributes", "external", "arms"}
    assert report["arms"][0]["name"] == "mixed" and set(report["arms"][0]["metrics"]["top1"]) == {"mean", "std", "ci95"}
    card = (synthetic / "README.md").read_text()
    assert "## Benchmark" in card and "skinsynth benchmark …" in card
    assert "| *majority class (`" in card and "| *chance (uniform guess)* | | | 0.143 |" in card and "Balanced accuracy is the headline" in card
    assert "Balanced accuracy by `sex`" in card and "| male |" in card


def test_training_on_a_held_out_image_is_refused(ham10000_dir, model_dir, arms_file, synthetic_dir, tmp_path):
    real = build_real(ham10000_dir, tmp_path / "leaky")
    raw = datasets.load_dataset(str(real)).cast_column("image", datasets.Image(decode=False))
    every_train_image = [raw["train"][i] for i in range(len(raw["train"]))]  # whichever rows an arm takes, one is in test
    write_split(real, "test", [raw["test"][i] for i in range(len(raw["test"]))] + every_train_image, real_features(), shard_size=1000)
    with pytest.raises(DatasetError, match="byte-identical"):
        run(real, synthetic_dir, model_dir, arms_file, tmp_path / "out")


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_common_label", "labels of .* do not match"),
        ("missing_test_split", "has no test split"),
        ("not_a_classifier", "has no image-classification head"),
        ("unknown_arms_key", "real_per_clas.*Extra inputs"),
    ],
)
def test_bad_input_is_one_error_and_exit_code_2(case, message, ham10000_dir, real_dir, synthetic_dir, model_dir, arms_file, tmp_path, capsys):
    real, synthetic, model, arms = real_dir, synthetic_dir, model_dir, arms_file
    if case == "no_common_label":
        synthetic = build_synthetic(tmp_path / "cats", names=("cat", "dog"), per_class=1)
    elif case == "missing_test_split":
        real = build_real(ham10000_dir, tmp_path / "no-test", splits=("train", "validation"))
    elif case == "not_a_classifier":
        from transformers import BertConfig

        model = tmp_path / "bert"
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(model)
    else:
        arms = tmp_path / "bad.yaml"
        arms.write_text("arms: [{name: real, real_per_clas: 4}]\n")
    code = main(["benchmark", "--real", str(real), "--synthetic", str(synthetic), "--arms", str(arms), "--model", str(model), "--out", str(tmp_path / "out"), "--image-size", "32"])
    assert code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after datasets' own progress bars
    assert last_line.startswith("error: ") and re.search(message, last_line)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_python_errors_are_package_errors(real_dir, synthetic_dir, model_dir, arms_file, tmp_path):
    with pytest.raises(SkinsynthError, match="exactly one"):
        benchmark(str(real_dir), [str(synthetic_dir)], model=str(model_dir), out=tmp_path, preset="akrout2023", arms=arms_file)
    with pytest.raises(DatasetError, match="every arm .* needs synthetic images"):
        benchmark(str(real_dir), [], model=str(model_dir), out=tmp_path, arms=[Arm(name="s", synthetic_per_class=1)])
    with pytest.raises(PipelineError, match="does not exist"):
        benchmark(str(real_dir), [], model="./missing-model", out=tmp_path, arms=[Arm(name="r", real_per_class=1)])
    with pytest.raises(OutputError, match="--update-card"):
        benchmark(str(real_dir), [str(synthetic_dir)], model=str(model_dir), out=tmp_path, arms=arms_file, update_card=str(real_dir))
    with pytest.raises(RecipeError, match="unknown preset"):
        benchmark(str(real_dir), [], model=str(model_dir), out=tmp_path, preset="akrout")


# ---- saved classifiers ------------------------------------------------------------------------------------------


def test_real_only_runs_are_saved_as_model_folders_that_a_pipeline_loads(recorded, ham10000_dir):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    summary, _, out = recorded
    assert sorted(p.name for p in (out / "models").iterdir()) == ["real"]  # default --save-models real: no synthetic arm
    folder = out / "models" / "real" / "seed1"
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.bin"))
    config = json.loads((folder / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(CLASSES))] == CLASSES
    card = ModelCard.load(folder / "README.md")
    scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
    seed1 = summary["arms"][0]["runs"][1]
    assert scores["Top-1 accuracy"] == round(seed1["top1"], 6) and scores["Balanced accuracy"] == round(seed1["balanced_accuracy"], 6)
    assert card.data.license is None and "seed 1" in card.text and "arm **real**" in card.text
    classify = pipeline("image-classification", model=str(folder), device="cpu")
    image = next((ham10000_dir / "images").glob("*.jpg"))
    predictions = classify(str(image), top_k=len(CLASSES))
    assert {p["label"] for p in predictions} == set(CLASSES) and sum(p["score"] for p in predictions) == pytest.approx(1, abs=1e-4)


def test_an_arm_folder_is_the_ensemble_of_its_seeds(recorded, synthetic_dir, tmp_path):
    from skinsynth.audit.features import image_batches
    from skinsynth.audit.filter import ClassifierEnsemble, FilterConfig, filter_dataset
    from skinsynth.data import open_dataset

    _, _, out = recorded
    config = FilterConfig(classifiers=(str(out / "models" / "real"),), threshold=0.0)
    manifest = filter_dataset(synthetic_dir, tmp_path / "kept", config, progress=False)
    kept = tmp_path / "kept"  # the manifest names the classifiers relative to the filtered dataset
    assert [(kept / c["path"]).resolve() for c in manifest["filter"]["classifiers"]] == [(out / "models" / "real" / f"seed{s}").resolve() for s in (0, 1)]
    assert manifest["filter"]["kept"] == 7 * 6
    images = next(image_batches(open_dataset(synthetic_dir)["train"], 4))
    names = CLASSES
    both = ClassifierEnsemble([str(out / "models" / "real" / f"seed{s}") for s in (0, 1)], names).probabilities(images)
    one = [ClassifierEnsemble([str(out / "models" / "real" / f"seed{s}")], names).probabilities(images) for s in (0, 1)]
    np.testing.assert_allclose(both, (one[0] + one[1]) / 2, rtol=1e-5)


def test_save_models_best_keeps_each_arms_best_seed_and_all_fills_in_the_rest(real_dir, synthetic_dir, model_dir, tmp_path):
    arms = tmp_path / "arms.yaml"
    arms.write_text("arms:\n  - {name: real, real_per_class: 2}\n  - {name: synthetic, synthetic_per_class: 2}\n")
    out = tmp_path / "out"
    summary = run(real_dir, synthetic_dir, model_dir, arms, out, epochs=1, seeds=2, save_models="best", select_by="loss")
    for arm in summary["arms"]:
        losses = [json.loads((out / "runs" / f"{arm['name']}-seed{s}.json").read_text())["best_val"]["loss"] for s in (0, 1)]
        assert [p.name for p in (out / "models" / arm["name"]).iterdir()] == [f"seed{int(np.argmin(losses))}"]
    run(real_dir, synthetic_dir, model_dir, arms, out, epochs=1, seeds=2, save_models="all", select_by="loss")
    assert sorted(str(p.relative_to(out)) for p in out.glob("models/*/seed*")) == [f"models/{a}/seed{s}" for a in ("real", "synthetic") for s in (0, 1)]
    with pytest.raises(SkinsynthError, match="--save-models"):
        run(real_dir, synthetic_dir, model_dir, arms, out, save_models="some")


def test_a_model_whose_image_processor_cannot_load_stops_the_run(recorded, real_dir, synthetic_dir, arms_file, tmp_path):
    import shutil

    _, _, out = recorded
    broken = tmp_path / "broken"
    shutil.copytree(out / "models" / "real" / "seed0", broken)
    (broken / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(PipelineError, match="image processor"):
        run(real_dir, synthetic_dir, broken, arms_file, tmp_path / "a")
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(PipelineError, match="no preprocessor_config.json"):
        run(real_dir, synthetic_dir, broken, arms_file, tmp_path / "b")


def test_generate_filters_with_the_saved_models_of_an_arm(recorded, tiny_pipeline_dir, tmp_path):
    import yaml

    _, _, out = recorded
    recipe = {"name": "ham-twin", "classes": [{"name": name} for name in CLASSES], "prompts": {"templates": ["a photo of {class}"]},
              "splits": {"train": {"per_class": 1}}, "generation": {"height": 32, "width": 32, "num_inference_steps": 1}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    args = ["-q", "generate", str(tmp_path / "recipe.yaml"), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--out", str(tmp_path / "syn"),
            "--filter-classifier", str(out / "models" / "real"), "--filter-threshold", "0.0"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "syn" / "generation.json").read_text())
    assert manifest["splits"]["train"]["num_rows"] == 7 and len(manifest["filter"]["classifiers"]) == 2


# ---- external test set ------------------------------------------------------------------------------------------


def build_external(ham10000_dir, out):
    """Another "dataset": a test split of HAM10000 lesions the real one does not hold, with display names, only
    three of the seven classes, and one class (`Squamous cell carcinoma`: the akiec lesions) the benchmark does not know."""
    with open(ham10000_dir / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = ["Melanoma", "Melanocytic Nevus", "Squamous cell carcinoma"]
    dx = {"mel": 0, "nv": 1, "akiec": 2}
    lesions = {d: list(dict.fromkeys(r["lesion_id"] for r in rows if r["dx"] == d))[12:14] for d in dx}
    chosen = [r for r in rows if r["dx"] in dx and r["lesion_id"] in lesions[r["dx"]]]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "sex": datasets.Value("string")})
    write_split(out, "test", [{"image": {"bytes": (ham10000_dir / "images" / f"{r['image_id']}.jpg").read_bytes(), "path": f"{r['image_id']}.jpg"},
                               "label": dx[r["dx"]], "sex": r["sex"]} for r in chosen], features, shard_size=1000)
    return out, [dx[r["dx"]] for r in chosen]


def test_every_arm_is_also_tested_on_an_external_dataset(ham10000_dir, real_dir, synthetic_dir, model_dir, tmp_path):
    external, labels = build_external(ham10000_dir, tmp_path / "pad")
    arms = tmp_path / "arms.yaml"
    arms.write_text("arms: [{name: real, real_per_class: 2}]\n")
    with pytest.raises(DatasetError, match="Squamous cell carcinoma"):
        run(real_dir, synthetic_dir, model_dir, arms, tmp_path / "out", test_datasets=[str(external)], seeds=1, epochs=1)
    label_map = {"Squamous cell carcinoma": None, **{n.replace("_", " ").capitalize(): n for n in CLASSES}}
    summary = run(real_dir, synthetic_dir, model_dir, arms, tmp_path / "out", test_datasets=[str(external)], label_map=label_map, seeds=1, epochs=1)
    info = summary["external"]["pad"]
    kept = [CLASSES.index(["melanoma", "melanocytic_nevus"][label]) for label in labels if label < 2]
    assert info["test_images"] == len(kept) and info["dropped_images"] == labels.count(2)
    assert info["test_class_counts"] == np.bincount(kept, minlength=7).tolist() and info["subgroup_attributes"] == ["sex"]
    saved = json.loads((tmp_path / "out" / "runs" / "real-seed0.json").read_text())
    scores = np.array(saved["external_scores"]["pad"])
    predicted = scores.argmax(axis=1)
    by_hand = np.mean([(predicted[np.array(kept) == c] == c).mean() for c in set(kept)])
    metrics = summary["arms"][0]["external"]["pad"]["metrics"]
    assert metrics["balanced_accuracy"]["mean"] == pytest.approx(by_hand) and metrics["top1"]["mean"] == pytest.approx(np.mean(predicted == kept))
    table = (tmp_path / "out" / "results.md").read_text()
    assert info["source"] == os.path.relpath(external, tmp_path / "out")  # named from the results' folder, like every local input
    assert f"External test set `{info['source']}` ({len(kept)} images of the trained classes; {labels.count(2)} of other classes left out)" in table


def test_class_weighted_loss_changes_training_on_an_imbalanced_arm(real_dir, synthetic_dir, model_dir, tmp_path):
    arms = [Arm(name="all-real", real_fraction=1.0)]  # HAM10000's imbalance: class weights differ
    plain = run(real_dir, synthetic_dir, model_dir, arms, tmp_path / "plain", epochs=1, seeds=1)
    weighted = run(real_dir, synthetic_dir, model_dir, arms, tmp_path / "weighted", epochs=1, seeds=1, class_weighted=True)
    assert weighted["settings"]["class_weighted"] and not plain["settings"]["class_weighted"]
    assert weighted["arms"][0]["runs"][0]["history"][0]["loss"] != plain["arms"][0]["runs"][0]["history"][0]["loss"]


# ---- finished runs are keyed on what they were trained on -------------------------------------------------------


def generate_synthetic(tiny_pipeline_dir, out, seed: int):
    """A synthetic dataset made by `generate` (manifest with shard sha256s): 2 images per class, from `seed`."""
    import shutil

    from skinsynth import generate
    from skinsynth.recipe import parse_recipe

    recipe = parse_recipe({
        "name": "ham-twin", "classes": [{"name": name} for name in CLASSES], "prompts": {"templates": ["a photo of {class}"]},
        "splits": {"train": {"per_class": 2}}, "generation": {"height": 32, "width": 32, "num_inference_steps": 1, "seed": seed},
    })
    shutil.rmtree(out, ignore_errors=True)  # regenerating at the same path: the normal way to iterate
    generate(recipe, str(tiny_pipeline_dir), out, device="cpu", progress=False)
    return out


def test_a_synthetic_dataset_regenerated_at_the_same_path_is_trained_on_again(real_dir, model_dir, tiny_pipeline_dir, tmp_path, monkeypatch, caplog):
    from skinsynth.benchmark import train
    from skinsynth.benchmark.export import RUN_FILE

    arms = [Arm(name="real", real_per_class=2), Arm(name="synthetic", synthetic_per_class=2)]
    synthetic, out = tmp_path / "synthetic", tmp_path / "out"
    first = run(real_dir, generate_synthetic(tiny_pipeline_dir, synthetic, seed=1), model_dir, arms, out, epochs=1, seeds=1)
    old_keys = {arm["name"]: arm["runs"][0]["key"] for arm in first["arms"]}
    manifest = json.loads((synthetic / "generation.json").read_text())
    old_scores = {name: json.loads((out / "runs" / f"{name}-seed0.json").read_text())["test_scores"] for name in ("real", "synthetic")}

    generate_synthetic(tiny_pipeline_dir, synthetic, seed=2)
    assert json.loads((synthetic / "generation.json").read_text())["splits"] != manifest["splits"]  # other images, same path
    trained, original = [], train.train_and_predict
    monkeypatch.setattr(train, "train_and_predict", lambda factory, train_set, *a, **k: trained.append(len(train_set)) or original(factory, train_set, *a, **k))
    with caplog.at_level(logging.INFO, logger="skinsynth.benchmark"):
        second = run(real_dir, synthetic, model_dir, arms, out, epochs=1, seeds=1)

    # the synthetic arm trained again, and said why; the real arm was reused, and said so
    assert trained == [2 * len(CLASSES)]
    new_keys = {arm["name"]: arm["runs"][0]["key"] for arm in second["arms"]}
    assert f"synthetic seed 0: training again: the synthetic dataset changed since it ran (key {old_keys['synthetic']['digest']} -> {new_keys['synthetic']['digest']})" in caplog.text
    assert f"real seed 0: reusing its finished run (same data, classifier and settings: key {old_keys['real']['digest']})" in caplog.text
    # the scores are the new data's: as a fresh benchmark of it gives, and not the old ones
    fresh = run(real_dir, synthetic, model_dir, arms[1:], tmp_path / "fresh", epochs=1, seeds=1)
    scores = {name: json.loads((out / "runs" / f"{name}-seed0.json").read_text())["test_scores"] for name in ("real", "synthetic")}
    assert scores["synthetic"] == json.loads((tmp_path / "fresh" / "runs" / "synthetic-seed0.json").read_text())["test_scores"]
    assert second["arms"][1]["metrics"] == fresh["arms"][0]["metrics"]
    assert scores["synthetic"] != old_scores["synthetic"] and scores["real"] == old_scores["real"]
    assert second["arms"][0]["runs"][0] == first["arms"][0]["runs"][0]
    # results.json records the keys: the real arm's unchanged, the synthetic one's naming the new shards
    saved = {arm["name"]: arm["runs"][0]["key"] for arm in json.loads((out / "results.json").read_text())["arms"]}
    assert saved == new_keys and new_keys["real"] == old_keys["real"]
    assert new_keys["synthetic"]["synthetic"]["source"] == "../synthetic" and new_keys["synthetic"]["real"] == old_keys["real"]["real"]
    assert new_keys["synthetic"]["synthetic"]["shards_sha256"] != old_keys["synthetic"]["synthetic"]["shards_sha256"]
    assert {k for k, v in new_keys["synthetic"].items() if v != old_keys["synthetic"][k]} == {"synthetic", "digest"}
    # the saved classifier carries its key
    assert json.loads((out / "models" / "real" / "seed0" / RUN_FILE).read_text())["key"] == new_keys["real"]


def test_runs_saved_without_a_key_are_trained_again_and_the_log_says_so_once(real_dir, synthetic_dir, model_dir, tmp_path, monkeypatch, caplog):
    from skinsynth.benchmark import train

    arms = [Arm(name="real", real_per_class=1), Arm(name="synthetic", synthetic_per_class=1)]
    out = tmp_path / "out"
    run(real_dir, synthetic_dir, model_dir, arms, out, epochs=1, seeds=1)
    for path in (out / "runs").glob("*.json"):  # as an older skinsynth saved them
        saved = json.loads(path.read_text())
        path.write_text(json.dumps({"identity": saved.pop("key")["digest"], **saved}))
    trained, original = [], train.train_and_predict
    monkeypatch.setattr(train, "train_and_predict", lambda factory, train_set, *a, **k: trained.append(len(train_set)) or original(factory, train_set, *a, **k))
    with caplog.at_level(logging.INFO, logger="skinsynth.benchmark"):
        run(real_dir, synthetic_dir, model_dir, arms, out, epochs=1, seeds=1)
    assert len(trained) == 2 and "reusing" not in caplog.text
    assert [r.getMessage() for r in caplog.records].count(
        f"2 finished runs in {out / 'runs'} were saved without a key by an older skinsynth (real-seed0.json, synthetic-seed0.json): they are trained again") == 1
