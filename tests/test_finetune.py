"""skinsynth.finetune: captions, batch order, the three methods end to end on the tiny pipeline, resume, bad input."""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from skinsynth.cli import main
from skinsynth.errors import DatasetError, OutputError, PipelineError, RecipeError, SkinsynthError
from skinsynth.finetune import build_captioner, finetune
from skinsynth.finetune.batches import BatchOrder, training_pixels
from skinsynth.finetune.captions import validation_prompts
from skinsynth.recipe import load_recipe, parse_recipe

from .written_files import is_pickle, uploaded_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = {"mel": "melanoma", "nv": "nevus", "bcc": "basal_cell_carcinoma"}
RECIPE = {
    "name": "ham-mini",
    "license": "cc-by-nc-sa-4.0",
    "classes": [{"name": "melanoma"}, {"name": "nevus", "prompt": "melanocytic nevus"}, {"name": "basal_cell_carcinoma", "prompt": "basal cell carcinoma"}],
    "attributes": {"body_site": ["back", "face", "lower extremity"], "sex": ["male", "female"]},
    "prompts": {"templates": ["a dermoscopic image of {class} on the {body_site}", "dermoscopy of {class}, {sex} patient"], "negative": "text"},
    "splits": {"train": {"per_class": 2}},
    "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "height": 32, "width": 32, "shard_size": 10, "seed": 7},
}
FAST = {"resolution": 32, "batch_size": 4, "validation_images": 0, "progress": False}


def write_real_dataset(root, ham10000_dir, per_class=8, splits=("train",)):
    """A small real dataset in the skinsynth layout (what `skinsynth prepare` writes), from HAM10000 images."""
    import datasets

    from skinsynth.shards import atomic_write_json, splits_manifest, write_split

    with open(ham10000_dir / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = list(CLASSES.values())
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=names), "body_site": datasets.Value("string"),
        "sex": datasets.Value("string"), "age": datasets.Value("string"), "group_id": datasets.Value("string"),
    })
    records = []
    for dx, name in CLASSES.items():
        for row in [r for r in rows if r["dx"] == dx][:per_class]:
            records.append({
                "image": {"bytes": (ham10000_dir / "images" / f"{row['image_id']}.jpg").read_bytes(), "path": f"{row['image_id']}.jpg"},
                "label": names.index(name),
                "body_site": None if row["localization"] == "unknown" else row["localization"],
                "sex": None if row["sex"] == "unknown" else row["sex"],
                "age": row["age"] or None,
                "group_id": row["lesion_id"],
            })
    infos = {split: write_split(root, split, records, features, shard_size=100) for split in splits}
    atomic_write_json(root / "prepare.json", {"kind": "real", "license": "cc-by-nc-sa-4.0", "citation": "Tschandl et al. 2018", "splits": splits_manifest(infos)})
    return root


@pytest.fixture(scope="module")
def real_data(ham10000_dir, tmp_path_factory):
    return write_real_dataset(tmp_path_factory.mktemp("real") / "ham", ham10000_dir)


@pytest.fixture(scope="module")
def recipe():
    return parse_recipe(RECIPE)


def images(pipe, prompt, seed=3):
    return pipe(prompt=[prompt], num_inference_steps=2, guidance_scale=2.0, height=32, width=32, generator=[torch.Generator().manual_seed(seed)], output_type="np").images[0]


# --- captions and batches (pure) ---------------------------------------------------------------------------------


def test_captions_are_the_templates_filled_from_the_row(recipe):
    captioner = build_captioner(recipe, ["melanoma", "nevus", "basal_cell_carcinoma"], ["image", "label", "body_site", "sex", "age"], method="lora")
    row = {"label": 1, "body_site": "back", "sex": "female"}
    assert captioner(row, index=0, epoch=0) == "a dermoscopic image of melanocytic nevus on the back"
    assert captioner(row, index=0, epoch=1) == "dermoscopy of melanocytic nevus, female patient"  # rotates by epoch
    assert captioner(row, index=1, epoch=0) == "dermoscopy of melanocytic nevus, female patient"  # and by row
    # an unknown value is never invented: only templates the row can fill, else the class text alone
    assert {captioner({"label": 2, "body_site": None, "sex": "male"}, i, 0) for i in range(4)} == {"dermoscopy of basal cell carcinoma, male patient"}
    assert captioner({"label": 0, "body_site": None, "sex": None}, 0, 0) == "melanoma"


def test_caption_dropout_is_seeded_and_textual_inversion_uses_class_tokens(recipe):
    columns = ["image", "label", "body_site", "sex"]
    dropping = build_captioner(recipe, ["nevus", "melanoma", "basal_cell_carcinoma"], columns, method="textual-inversion", dropout=0.3, seed=5)
    row = {"label": 0, "body_site": "face", "sex": "male"}
    captions = [dropping(row, i, epoch) for epoch in range(5) for i in range(40)]
    assert captions == [dropping(row, i, epoch) for epoch in range(5) for i in range(40)]
    assert 0.2 < captions.count("") / len(captions) < 0.4
    assert set(captions) - {""} == {"a dermoscopic image of <nevus> on the face", "dermoscopy of <nevus>, male patient"}  # label 0 is nevus here
    assert [[p.text for p in row] for row in validation_prompts(recipe, ["<melanoma>"], 3)] == [["a dermoscopic image of <melanoma> on the back", "dermoscopy of <melanoma>, female patient", "a dermoscopic image of <melanoma> on the lower extremity"]]


def test_class_dropout_leaves_the_class_out_and_keeps_the_attributes(recipe):
    columns = ["image", "label", "body_site", "sex"]
    names = ["nevus", "melanoma", "basal_cell_carcinoma"]
    plain = build_captioner(recipe, names, columns, method="scratch", dropout=0.1, seed=5)
    dropping = build_captioner(recipe, names, columns, method="scratch", dropout=0.1, class_dropout=0.3, seed=5)
    row = {"label": 1, "body_site": "face", "sex": "male"}
    captions = [dropping(row, i, epoch) for epoch in range(5) for i in range(40)]
    assert captions == [dropping(row, i, epoch) for epoch in range(5) for i in range(40)]
    class_free = {"a dermoscopic image of on the face", "dermoscopy of, male patient"}  # what `class_free_negative` generates against
    assert 0.2 < sum(c in class_free for c in captions) / len(captions) < 0.4
    assert set(captions) == class_free | {"", "a dermoscopic image of melanoma on the face", "dermoscopy of melanoma, male patient"}
    # the whole-caption dropout draws as without class dropout: the same rows are empty
    assert [c == "" for c in captions] == [plain(row, i, epoch) == "" for epoch in range(5) for i in range(40)]
    data = recipe.to_dict()
    data["prompts"] = {**data["prompts"], "negative": "", "class_free_negative": True}
    negatives = {p.negative for p in validation_prompts(parse_recipe(data), ["melanoma"], 2)[0]}
    assert negatives == {"a dermoscopic image of on the back", "dermoscopy of, female patient"}


def test_captioner_refuses_what_it_cannot_caption(recipe):
    names = ["melanoma", "nevus", "basal_cell_carcinoma"]
    with pytest.raises(DatasetError, match=r"\{sex\}.*no such column"):
        build_captioner(recipe, names, ["image", "label", "body_site"], method="lora")
    with pytest.raises(DatasetError, match=r"only in the dataset: \['mel'\].*only in the recipe: \['melanoma'\]"):
        build_captioner(recipe, ["mel", "nevus", "basal_cell_carcinoma"], ["image", "label", "body_site", "sex"], method="lora")
    no_class = parse_recipe({**RECIPE, "prompts": {"templates": ["skin on the {body_site}"]}})
    with pytest.raises(RecipeError, match=r"no \{class\}"):
        build_captioner(no_class, names, ["image", "label", "body_site", "sex"], method="lora")


def test_batch_order_covers_each_epoch_splits_processes_and_resumes_anywhere():
    order = BatchOrder(num_rows=10, batch_size=2, num_processes=2, seed=1)
    assert order.batches_per_epoch == 2  # 8 of 10 rows per epoch: the partial batch is dropped
    epoch0 = [order.batch(m, p) for m in range(2) for p in range(2)]
    rows = [row for batch in epoch0 for row, epoch in batch]
    assert len(set(rows)) == 8 and {epoch for batch in epoch0 for _, epoch in batch} == {0}
    assert order.batch(2, 0)[0][1] == 1 and order.epoch_order(1).tolist() != order.epoch_order(0).tolist()
    assert BatchOrder(10, 2, 2, seed=1).batch(3, 1) == order.batch(3, 1)  # a pure function of the step


def test_class_balance_draws_rare_classes_as_often_as_common_ones_and_stays_a_pure_function():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    plain = BatchOrder.balanced(labels, batch_size=10, seed=3)
    assert plain.row_weights is None and sorted(plain.epoch_order(0).tolist()) == list(range(100))
    balanced = BatchOrder.balanced(labels, batch_size=10, seed=3, balance=1.0)
    drawn = np.concatenate([balanced.epoch_order(e) for e in range(30)])
    shares = np.bincount(np.asarray(labels)[drawn], minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.03)
    assert BatchOrder.balanced(labels, 10, seed=3, balance=1.0).batch(17) == balanced.batch(17)  # resumable
    half = BatchOrder.balanced(labels, 10, seed=3, balance=0.5)
    assert 90 / 100 > half.row_weights[:90].sum() > 1 / 3  # in between


def test_training_pixels_resize_center_crop_flip():
    image = Image.new("RGB", (200, 150), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 100, 150))  # left half blue
    pixels = training_pixels(image, 32, flip=False)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.float32 and pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[2, 16, 0] == 1.0 and pixels[0, 16, -1] == 1.0  # blue left, red right
    assert np.array_equal(training_pixels(image, 32, flip=True), pixels[:, :, ::-1])


# --- training end to end ------------------------------------------------------------------------------------------


def test_full_finetune_loss_falls_and_the_pipeline_loads_in_generate(tiny_pipeline_dir, real_data, recipe, tmp_path):
    from skinsynth import generate

    out = tmp_path / "full"
    result = finetune(str(tiny_pipeline_dir), real_data, recipe, out, method="full", ema=True, max_steps=24, learning_rate=1e-3,
                      checkpoint_every=12, validate_every=12, **{**FAST, "validation_images": 2, "resolution": 64})  # 8x8 latents
    losses = result.losses
    assert len(losses) == 24
    assert np.mean(losses[-6:]) < 0.6 * np.mean(losses[:6]), losses
    metadata = json.loads((out / "skinsynth_model.json").read_text())
    assert metadata["method"] == "full" and metadata["steps"] == 24 and metadata["base_model"] == os.path.relpath(tiny_pipeline_dir, out)
    assert json.loads((out / "finetune_config.json").read_text())["hyperparameters"]["learning_rate"] == 1e-3
    assert metadata["training_license"] == "cc-by-nc-sa-4.0" and metadata["final_loss"] == pytest.approx(np.mean(losses[-10:]), abs=1e-5)
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert Image.open(out / "sample_grid.png").size[1] == 3 * 32 and (out / "validation" / "step-000012.png").is_file()
    # the training state (accelerate pickles the optimizer and random states) lives beside the output, not in it
    assert [p.name for p in sorted((tmp_path / "full.checkpoints").glob("checkpoint-*"))] == ["checkpoint-12", "checkpoint-24"]
    assert (tmp_path / "full.checkpoints" / "checkpoint-24" / "optimizer.bin").is_file()
    assert uploaded_files(out) and not [name for name in uploaded_files(out) if is_pickle(out / name)]
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0" and "sample_grid.png" in card.text

    manifest = generate(recipe, str(out), tmp_path / "synthetic", batch_size=2, limit=2, progress=False)
    assert manifest["model"]["finetune"]["method"] == "full"
    base = generate(recipe, str(tiny_pipeline_dir), tmp_path / "base", batch_size=2, limit=2, progress=False)
    assert manifest["splits"]["train"]["shards"][0]["sha256"] != base["splits"]["train"]["shards"][0]["sha256"]


def test_lora_resume_continues_to_the_same_weights(tiny_pipeline_dir, real_data, recipe, tmp_path):
    from skinsynth.pipeline import load_pipeline

    straight = finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "straight", method="lora", max_steps=4, learning_rate=1e-2, checkpoint_every=2, **FAST)
    interrupted = tmp_path / "resumed"
    finetune(str(tiny_pipeline_dir), real_data, recipe, interrupted, method="lora", max_steps=2, learning_rate=1e-2, checkpoint_every=2, **FAST)
    with pytest.raises(OutputError, match="--resume"):
        finetune(str(tiny_pipeline_dir), real_data, recipe, interrupted, method="lora", max_steps=4, learning_rate=1e-2, checkpoint_every=2, **FAST)
    with pytest.raises(OutputError, match="another hyperparameters"):
        finetune(str(tiny_pipeline_dir), real_data, recipe, interrupted, method="lora", max_steps=4, learning_rate=5e-3, checkpoint_every=2, resume=True, **FAST)
    # Versions before issue 21 kept the state inside the output (`.skinsynth/checkpoints/`), and recorded absolute
    # paths: resume finds the state, moves it out, and takes the paths for the relative ones of today.
    config = json.loads((interrupted / "finetune_config.json").read_text())
    config["identity"].update(base_model=str(tiny_pipeline_dir), training_data=str(real_data))
    (interrupted / "finetune_config.json").write_text(json.dumps(config))
    (interrupted / ".skinsynth").mkdir()
    (tmp_path / "resumed.checkpoints").rename(interrupted / ".skinsynth" / "checkpoints")
    resumed = finetune(str(tiny_pipeline_dir), real_data, recipe, interrupted, method="lora", max_steps=4, learning_rate=1e-2, checkpoint_every=2, resume=True, **FAST)
    assert resumed.metadata["steps"] == 4 and resumed.losses == straight.losses
    a, b = (load_file(d / "pytorch_lora_weights.safetensors") for d in (tmp_path / "straight", interrupted))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (interrupted / ".skinsynth").exists() and sorted(p.name for p in (tmp_path / "resumed.checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    base, _ = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    tuned, info = load_pipeline(str(tiny_pipeline_dir), device="cpu", lora=str(interrupted))
    assert info.lora["finetune"]["method"] == "lora" and info.lora["finetune"]["training_license"] == "cc-by-nc-sa-4.0"
    prompt = "a dermoscopic image of melanoma on the back"
    assert not np.allclose(images(base, prompt), images(tuned, prompt))


def test_a_resume_chooses_its_checkpoint_under_the_lock(tiny_pipeline_dir, real_data, recipe, tmp_path, monkeypatch):
    """Two resumes of one run race: while the second starts, before it holds the lock, the first takes the run to its
    end and prunes the checkpoint the second had seen. The second must continue from where the first ended."""
    from skinsynth.finetune import train

    options = {"method": "lora", "learning_rate": 1e-2, "checkpoint_every": 2, **FAST}
    straight = finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "straight", max_steps=6, **options)
    out = tmp_path / "run"
    finetune(str(tiny_pipeline_dir), real_data, recipe, out, max_steps=2, **options)
    start_accelerator = train._accelerator

    def first_resume_finishes_meanwhile(*args):
        monkeypatch.setattr(train, "_accelerator", start_accelerator)
        finetune(str(tiny_pipeline_dir), real_data, recipe, out, max_steps=6, resume=True, **options)
        return start_accelerator(*args)

    monkeypatch.setattr(train, "_accelerator", first_resume_finishes_meanwhile)
    second = finetune(str(tiny_pipeline_dir), real_data, recipe, out, max_steps=6, resume=True, **options)
    assert sorted(p.name for p in (tmp_path / "run.checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert second.metadata["steps"] == 6 and second.losses == straight.losses
    a, b = (load_file(d / "pytorch_lora_weights.safetensors") for d in (tmp_path / "straight", out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_textual_inversion_learns_one_token_per_class_that_generate_loads(tiny_pipeline_dir, real_data, recipe, tmp_path):
    from skinsynth.pipeline import load_pipeline

    out = tmp_path / "ti"
    result = finetune(str(tiny_pipeline_dir), real_data, recipe, out, method="textual-inversion", max_steps=4, learning_rate=1e-2,
                      gradient_checkpointing=True, gradient_accumulation_steps=2, **FAST)
    assert result.metadata["tokens"] == {"melanoma": "<melanoma>", "nevus": "<nevus>", "basal_cell_carcinoma": "<basal_cell_carcinoma>"}
    token_recipe = load_recipe(out / "recipe.yaml")
    assert [c.text for c in token_recipe.classes] == ["<melanoma>", "<nevus>", "<basal_cell_carcinoma>"]

    base, _ = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    tuned, info = load_pipeline(str(tiny_pipeline_dir), device="cpu", embeddings=[str(out)])
    assert sorted(info.embeddings[0]["tokens"]) == ["<basal_cell_carcinoma>", "<melanoma>", "<nevus>"]
    assert info.embeddings[0]["finetune"]["method"] == "textual-inversion"
    # each learned embedding moved away from its initialization (the mean embedding of the class text)
    table = base.text_encoder.get_input_embeddings().weight
    for spec in recipe.classes:
        learned = load_file(out / f"learned_embeds-{spec.name}.safetensors")[f"<{spec.name}>"]
        start = table[base.tokenizer(spec.text, add_special_tokens=False).input_ids].mean(0)
        assert learned.shape == start.shape and not torch.allclose(learned, start, atol=1e-4)
    assert not np.allclose(images(base, "a dermoscopic image of melanoma on the back"), images(tuned, "a dermoscopic image of <melanoma> on the back"))


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_input_fails_before_training_with_exit_code_2(tiny_pipeline_dir, real_data, ham10000_dir, recipe, tmp_path, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    img2img = tmp_path / "img2img"
    img2img.mkdir()
    index = json.loads((tiny_pipeline_dir / "model_index.json").read_text())
    (img2img / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionImg2ImgPipeline"}))
    no_train = write_real_dataset(tmp_path / "no-train", ham10000_dir, per_class=2, splits=("test",))
    fitzpatrick = tmp_path / "fitzpatrick.yaml"
    fitzpatrick.write_text(parse_recipe({**RECIPE, "attributes": {**RECIPE["attributes"], "fitzpatrick": ["I", "II"]},
                                         "prompts": {"templates": ["{class}, skin type {fitzpatrick}"]}}).to_yaml())
    cases = [
        (str(img2img), real_data, recipe_file, "not a text-to-image pipeline"),
        (str(tiny_pipeline_dir), no_train, recipe_file, "no train split"),
        (str(tiny_pipeline_dir), real_data, fitzpatrick, r"\{fitzpatrick\} but the dataset has no such column"),
    ]
    for base, data, recipe_path, message in cases:
        out = tmp_path / "out"
        code = main(["finetune", "--base", base, "--data", str(data), "--recipe", str(recipe_path), "--method", "lora", "--out", str(out), "--resolution", "32"])
        err = capsys.readouterr().err
        last_line = err.strip().splitlines()[-1]
        assert code == 2 and last_line.startswith("error: ") and re.search(message, last_line), err
        assert not out.exists()  # nothing was written: no step ran
    with pytest.raises(PipelineError):
        finetune(str(img2img), real_data, recipe, tmp_path / "out", method="full", **FAST)
    with pytest.raises(SkinsynthError, match="--ema"):
        finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "out", method="lora", ema=True, **FAST)
    with pytest.raises(SkinsynthError, match="--batch-size"):
        finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "out", method="lora", **{**FAST, "batch_size": 0})
    with pytest.raises(SkinsynthError, match="--class-dropout.*textual inversion trains only the class tokens"):
        finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "out", method="textual-inversion", class_dropout=0.1, **FAST)


def test_v_prediction_bases_train_on_the_velocity(tiny_pipeline_dir, real_data, recipe, tmp_path):
    import shutil

    v_base = tmp_path / "v-base"
    shutil.copytree(tiny_pipeline_dir, v_base)
    config_file = v_base / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "prediction_type": "v_prediction"}))
    epsilon = finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "eps", method="lora", max_steps=1, **FAST)
    velocity = finetune(str(v_base), real_data, recipe, tmp_path / "v", method="lora", max_steps=1, checkpoint_dir=tmp_path / "state", **FAST)
    assert (tmp_path / "state" / "checkpoint-1" / "optimizer.bin").is_file() and not (tmp_path / "v.checkpoints").exists()
    # same seed, same batch, same noise and timesteps: only the target differs
    assert np.isfinite(velocity.losses[0]) and velocity.losses[0] != pytest.approx(epsilon.losses[0], rel=1e-3)
