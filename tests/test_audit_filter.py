"""Filtering: exactly the expected rows are kept (stub classifiers and injected scorers), degenerate images never
are, and filtered generation still reaches every count, deterministically."""

import io
import json

import numpy as np
import pytest
import yaml
from .audit_datasets import CLASSES, ham_rows, tiny_classifier, write_dataset
from .conftest import DEMO_RECIPE
from PIL import Image

from skinsynth.audit.filter import HIGH, LOW, SCORE_COLUMN, FilterConfig, ImageFilter, filter_dataset
from skinsynth.cli import main
from skinsynth.data import open_dataset
from skinsynth.errors import OutputError, ShortfallError, SkinsynthError
from skinsynth.generate import generate
from skinsynth.plan import plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TEXTS = ["actinic keratosis", "basal cell carcinoma", "benign seborrheic keratosis", "dermatofibroma", "melanoma", "melanocytic nevus", "vascular lesion"]


def brightness(images, labels):
    """A scorer the test can predict: the mean pixel value in [0, 1]."""
    return np.array([np.asarray(image, dtype=np.float32).mean() / 255 for image in images], dtype=np.float32)


def blank(value: int) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (value,) * 3).save(buffer, format="PNG")
    return {"image": {"bytes": buffer.getvalue(), "path": f"blank-{value}.png"}, "label": 4, "image_id": f"blank-{value}"}


@pytest.fixture(scope="module")
def filter_dir(ham10000_dir, tmp_path_factory):
    """Synthetic: 3 images per class plus an all-black and a constant grey image; real: 3 others per class."""
    root = tmp_path_factory.mktemp("filter")
    recipe = {"classes": [{"name": name, "prompt": text} for name, text in zip(CLASSES, TEXTS)], "generation": {"shard_size": 8}}
    write_dataset(root / "syn", {"train": ham_rows(ham10000_dir, 3) + [blank(0), blank(128)]}, manifest={"recipe": recipe})
    write_dataset(root / "real", {"validation": ham_rows(ham10000_dir, 3, skip=3)})
    bias = lambda k: [5.0 if i == k else 0.0 for i in range(len(CLASSES))]  # noqa: E731
    tiny_classifier(root / "sure-mel", CLASSES, bias(CLASSES.index("mel")))
    tiny_classifier(root / "sure-nv", CLASSES, bias(CLASSES.index("nv")))
    tiny_classifier(root / "other-labels", ["a", "b"])
    return root


def labels_of(path):
    ds = open_dataset(path)["train"]
    return [CLASSES[k] for k in ds["label"]], ds


def test_a_sure_classifier_keeps_exactly_its_class(filter_dir, tmp_path):
    manifest = filter_dataset(filter_dir / "syn", tmp_path / "out", FilterConfig(classifiers=(str(filter_dir / "sure-mel"),), threshold=0.5), progress=False)
    labels, ds = labels_of(tmp_path / "out")
    assert labels == ["mel"] * 3
    assert all(score > 0.9 for score in ds[SCORE_COLUMN])
    assert manifest["filter"]["rejections"] == {"constant": 2, LOW: 18}
    assert manifest["filter"]["kept"] == 3 and manifest["splits"]["train"]["num_rows"] == 3
    assert json.loads((tmp_path / "out" / "prepare.json").read_text()) == manifest  # the source's kind of manifest
    assert "| train | 3 |" in (tmp_path / "out" / "README.md").read_text() and (tmp_path / "out" / "sample_grid.png").is_file()
    # original image bytes are kept
    source = {r["image_id"]: r["image"]["bytes"] for r in open_dataset(filter_dir / "syn")["train"].cast_column("image", __import__("datasets").Image(decode=False))}
    kept = open_dataset(tmp_path / "out")["train"].cast_column("image", __import__("datasets").Image(decode=False))
    assert all(row["image"]["bytes"] == source[row["image_id"]] for row in kept)


def test_an_ensemble_averages_probabilities(filter_dir, tmp_path):
    classifiers = (str(filter_dir / "sure-mel"), str(filter_dir / "sure-nv"))
    filter_dataset(filter_dir / "syn", tmp_path / "out", FilterConfig(classifiers=classifiers, threshold=0.4), progress=False)
    labels, ds = labels_of(tmp_path / "out")
    assert sorted(labels) == ["mel"] * 3 + ["nv"] * 3
    assert all(0.45 < score < 0.5 for score in ds[SCORE_COLUMN])


def test_per_class_thresholds_are_the_mean_score_on_real_images(filter_dir, tmp_path):
    syn = open_dataset(filter_dir / "syn")["train"]
    real = open_dataset(filter_dir / "real")["validation"]
    real_scores = brightness(real["image"], None)
    thresholds = {k: real_scores[np.asarray(real["label"]) == k].mean() for k in range(len(CLASSES))}
    scores = brightness(syn["image"], None)
    expected = [r["image_id"] for r, s in zip(syn, scores) if 0.01 < s and thresholds[r["label"]] <= s <= 0.7]
    config = FilterConfig(real=str(filter_dir / "real"), upper=0.7)
    manifest = filter_dataset(filter_dir / "syn", tmp_path / "out", config, scorer=brightness, progress=False)
    assert open_dataset(tmp_path / "out")["train"]["image_id"] == expected
    assert manifest["filter"]["thresholds"] == {CLASSES[k]: round(float(t), 6) for k, t in thresholds.items()}
    assert sum(manifest["filter"]["rejections"].values()) + len(expected) == len(syn)


def test_bad_input_is_refused(filter_dir, tmp_path, capsys):
    with pytest.raises(SkinsynthError, match="does not know the dataset's classes"):
        filter_dataset(filter_dir / "syn", tmp_path / "a", FilterConfig(classifiers=(str(filter_dir / "other-labels"),), threshold=0.5), progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(SkinsynthError, match="--real"):
        FilterConfig(classifiers=("x",))
    with pytest.raises(SkinsynthError, match="--upper"):
        FilterConfig(threshold=0.5, upper=0.4)
    args = ["-q", "filter", str(filter_dir / "syn"), "--out", str(tmp_path / "b"), "--threshold", "0.5", "--classifier"]
    assert main(args + [str(filter_dir / "other-labels")]) == 2
    assert "does not know" in capsys.readouterr().err
    assert main(args + [str(filter_dir / "sure-mel")]) == 0
    assert "kept 3 images" in capsys.readouterr().out
    assert main(args + [str(filter_dir / "sure-mel")]) == 2  # the output exists now


def pixel_hash(images, labels):
    """A deterministic score that rejects about half of the (noise) images of the tiny pipeline."""
    return np.array([(int(np.asarray(image, dtype=np.int64).sum()) % 1000) / 1000 for image in images], dtype=np.float32)


@pytest.fixture(scope="module")
def patient_recipe(tmp_path_factory):
    recipe = yaml.safe_load(DEMO_RECIPE.read_text())
    recipe["generation"]["max_attempts"] = 30
    recipe["splits"] = {"train": {"per_class": 2}}
    recipe["generation"]["guidance_scale"] = 2.0
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_filtered_generation_reaches_every_count_and_is_deterministic(tiny_pipeline_dir, patient_recipe, tmp_path):
    names = ["melanoma", "nevus", "basal_cell_carcinoma"]
    runs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        image_filter = ImageFilter(pixel_hash, np.full(3, 0.5), names)
        runs.append(generate(patient_recipe, str(tiny_pipeline_dir), out, batch_size=6, device="cpu", progress=False, image_filter=image_filter))
    manifest = runs[0]
    assert manifest["splits"]["train"]["num_rows"] == 6
    assert manifest["filter"]["rejections"][LOW] > 0 and "dropped" not in manifest["filter"]["rejections"]
    assert manifest["filter"]["thresholds"] == {name: 0.5 for name in names}
    ds = open_dataset(tmp_path / "a")["train"]
    assert all(score >= 0.5 for score in ds[SCORE_COLUMN])
    assert np.bincount(ds["label"]).tolist() == [2, 2, 2]
    planned = plan(__import__("skinsynth.recipe", fromlist=["load_recipe"]).load_recipe(patient_recipe))["train"]
    assert any(seed != int(s) for seed, s in zip(ds["seed"], planned.seeds))  # retried rows carry their new seed
    assert [s["sha256"] for s in runs[0]["splits"]["train"]["shards"]] == [s["sha256"] for s in runs[1]["splits"]["train"]["shards"]]
    # a run is resumed only with the same filter
    again = generate(patient_recipe, str(tiny_pipeline_dir), tmp_path / "a", batch_size=6, device="cpu", progress=False, image_filter=ImageFilter(pixel_hash, np.full(3, 0.5), names))
    assert again["splits"] == manifest["splits"]
    with pytest.raises(OutputError, match="another filter"):
        generate(patient_recipe, str(tiny_pipeline_dir), tmp_path / "a", batch_size=6, device="cpu", progress=False, image_filter=ImageFilter(pixel_hash, np.full(3, 0.6), names))


def test_generate_cli_filter_flags(tiny_pipeline_dir, patient_recipe, tmp_path, capsys):
    names = ["melanoma", "nevus", "basal_cell_carcinoma"]
    clf = tiny_classifier(tmp_path / "rejects-bcc", names, [2.0, 2.0, -3.0])  # every image: 0.498 / 0.498 / 0.003
    args = ["-q", "generate", str(patient_recipe), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--limit", "3", "--batch-size", "3"]
    assert main(args + ["--out", str(tmp_path / "x"), "--filter-threshold", "0.5"]) == 2
    assert "--filter-classifier" in capsys.readouterr().err
    recipe = yaml.safe_load(patient_recipe.read_text())
    recipe["generation"]["max_attempts"] = 2
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    args[2] = str(tmp_path / "r.yaml")
    # a classifier that rejects one class almost always: the run stops, naming the cell, its acceptance rate and the fixes
    assert main(args + ["--out", str(tmp_path / "y"), "--filter-classifier", str(clf), "--filter-threshold", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class `basal_cell_carcinoma`" in err and "kept 0 of 2 images in this run (0.0%)" in err
    assert "--filter-threshold" in err and "max_attempts" in err
    assert json.loads((tmp_path / "y" / "generation.json").read_text())["status"] == "incomplete"
    # the same recipe with a lenient threshold reaches its exact counts
    assert main(args + ["--out", str(tmp_path / "z"), "--filter-classifier", str(clf), "--filter-threshold", "0.001"]) == 0
    manifest = json.loads((tmp_path / "z" / "generation.json").read_text())
    assert manifest["splits"]["train"]["num_rows"] == 3 and manifest["filter"]["rejections"] == {}
    assert manifest["identity"]["filter"]["classifiers"][0]["fingerprint"]
    assert HIGH not in manifest["filter"]["rejections"]
    # `skinsynth filter` after generation: a complete dataset with its own manifest and card, which verify accepts
    assert main(["-q", "filter", str(tmp_path / "z"), "--classifier", str(clf), "--threshold", "0.4", "--out", str(tmp_path / "f")]) == 0
    filtered = json.loads((tmp_path / "f" / "generation.json").read_text())
    assert filtered["status"] == "complete" and filtered["splits"]["train"]["num_rows"] == 2 and filtered["filter"]["rejections"] == {LOW: 1}
    during, after = ((tmp_path / name / "README.md").read_text() for name in ("z", "f"))  # each card says in words what its filter did
    assert "Label filter (during generation; a rejected image is remade with its next seed): an image is kept when 1 real-trained classifier (`../rejects-bcc`)" in during
    assert "Label filter (after generation): an image is kept when 1 real-trained classifier (`../rejects-bcc`)" in after and "2 images kept; rejected: " in after
    assert "{'path'" not in during + after  # no raw record
    assert main(["-q", "verify", str(tmp_path / "f")]) == 0


def only_bright_bcc(images, labels):
    """Accepts every melanoma and nevus image, and a basal cell carcinoma image only about one time in three."""
    return np.where(np.asarray(labels) == 2, pixel_hash(images, labels) > 0.67, 1.0).astype(np.float32)


def test_a_short_run_resumes_with_more_attempts_into_the_same_shards(tiny_pipeline_dir, patient_recipe, tmp_path):
    names = ["melanoma", "nevus", "basal_cell_carcinoma"]
    recipe = yaml.safe_load(patient_recipe.read_text())
    recipe["generation"].update(shard_size=2, max_attempts=1, height=32, width=32, num_inference_steps=2)
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(recipe))
    recipe["generation"]["max_attempts"] = 30
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(recipe))

    def make(recipe_file, out):
        return generate(tmp_path / recipe_file, str(tiny_pipeline_dir), tmp_path / out, batch_size=2, device="cpu", progress=False,
                        image_filter=ImageFilter(only_bright_bcc, np.full(3, 0.5), names))

    with pytest.raises(ShortfallError, match="class `basal_cell_carcinoma`"):
        make("short.yaml", "run")
    finished = sorted(p.name for p in (tmp_path / "run" / "data").glob("*.arrow"))
    assert finished and len(finished) < 3  # the shards before the short cell stay
    resumed = make("long.yaml", "run")
    fresh = make("long.yaml", "fresh")
    assert resumed["splits"] == fresh["splits"] and resumed["identity"] == fresh["identity"] and resumed["recipe"] == fresh["recipe"]
    assert np.bincount(open_dataset(tmp_path / "run")["train"]["label"]).tolist() == [2, 2, 2]
    recipe["generation"]["max_attempts"] = 10  # fewer attempts might have made other rows: refused
    (tmp_path / "fewer.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(OutputError, match="only `generation.max_attempts` may be raised"):
        make("fewer.yaml", "run")


def tiny_clip(path, tokenizer_dir):
    """A random-weight CLIP model and processor (tokenizer from the tiny pipeline), saved like a Hub checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def test_clip_margin_is_the_class_prompt_over_the_best_decoy(filter_dir, tiny_pipeline_dir, tmp_path):
    import torch

    from skinsynth.audit.filter import CLIP, DECOYS, ClipCheck

    clip = tiny_clip(tmp_path / "clip", tiny_pipeline_dir / "tokenizer")
    syn = open_dataset(filter_dir / "syn")["train"]
    images = [image.convert("RGB") for image in syn["image"]]
    labels = np.asarray(syn["label"])
    check = ClipCheck(str(clip), TEXTS)
    margins = check(images, labels)
    prompts = [f"a photo of {t}" for t in TEXTS] + list(DECOYS)
    inputs = check.processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = check.model(**inputs).logits_per_image.numpy()
    np.testing.assert_allclose(margins, logits[np.arange(len(images)), labels] - logits[:, len(TEXTS):].max(axis=1), rtol=1e-5, atol=1e-5)
    # end to end: this random CLIP prefers a decoy for every image, so every non-blank image is rejected by CLIP
    assert (margins <= 0).all()
    with pytest.raises(SkinsynthError, match=f"no image of the `train` split passed the filter .*'{CLIP}': {len(syn) - 2}"):
        filter_dataset(filter_dir / "syn", tmp_path / "out", FilterConfig(threshold=0.0, clip=str(clip)), scorer=brightness, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.tmp").exists()


def test_clip_rejections_come_after_the_classifier():
    from skinsynth.audit.filter import CLIP, CLIP_COLUMN

    image_filter = ImageFilter(lambda images, labels: np.array([0.9, 0.9, 0.1, 0.9]), np.full(2, 0.5), ["a", "b"],
                               clip=lambda images, labels: np.array([1.0, -1.0, 2.0, 0.0]))
    reasons, scores = image_filter.review([None] * 5, [0, 1, 0, 1, 0], [None, None, None, None, "constant"])
    assert reasons == [None, CLIP, LOW, CLIP, "constant"]
    assert [s[CLIP_COLUMN] for s in scores[:4]] == [1.0, -1.0, 2.0, 0.0] and np.isnan(scores[4][SCORE_COLUMN])
