"""`finetune --method scratch`: a pipeline trained from random weights learns its classes end to end (toy colours,
generated through the normal `generate` path, judged by an independent nearest-mean-colour classifier), with a
shuffled-caption control; resume across both stages; bad input."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from skinsynth.cli import main
from skinsynth.errors import SkinsynthError
from skinsynth.finetune import finetune
from skinsynth.finetune.scratch import (
    ARCHITECTURES,
    caption_words,
    check_resolution,
    load_architecture,
)
from skinsynth.recipe import parse_recipe
from skinsynth.shards import atomic_write_json, splits_manifest, write_split

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}
TOY_RECIPE = {
    "name": "toy-colours",
    "license": "cc0-1.0",
    "classes": [{"name": name, "prompt": f"{name} lesion"} for name in COLOURS],
    "prompts": {"templates": ["a photo of a {class}", "{class} close up"]},
    "splits": {"train": {"per_class": 12}},
    "generation": {"num_inference_steps": 10, "guidance_scale": 4.0, "height": 16, "width": 16, "shard_size": 50, "seed": 11},
}
# The `tiny` preset at 16 px (a 2x autoencoder, 8x8 latents): the learning test must take about a minute on one core.
TOY_ARCHITECTURE = {"resolution": 16, "autoencoder_channels": [16, 32], "autoencoder_steps": 150, "unet_channels": [32, 48], "text_hidden_size": 32}
TOY_TRAINING = {"max_steps": 700, "batch_size": 8, "learning_rate": 1e-3, "validation_images": 0, "progress": False}


def write_toy_dataset(root, per_class=12, shuffle_captions=False, classes=tuple(COLOURS), resolution=16, seed=0, sides=False):
    """Flat-colour squares with a little noise and a darker blob, one colour per class. With `shuffle_captions`
    each image keeps its colour but carries a random class label: its caption names the wrong class 2 times in 3.
    With `sides`, the blob sits in the left or right half and a `side` column says which (an attribute)."""
    rng = np.random.default_rng(seed)
    names = list(classes)
    records = []
    for label, name in enumerate(names):
        for _ in range(per_class):
            pixels = np.array(COLOURS[name], dtype=np.float32) + rng.normal(0, 12, (resolution, resolution, 3))
            y, x = np.mgrid[:resolution, :resolution]
            cy, cx = rng.integers(resolution // 4, 3 * resolution // 4, 2)
            if sides:  # drawn only then: the other toys keep their images
                side = ("left", "right")[rng.integers(2)]
                cx = resolution // 4 if side == "left" else 3 * resolution // 4
            pixels[(y - cy) ** 2 + (x - cx) ** 2 < (resolution // 6) ** 2] *= 0.7
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
            records.append({"image": image, "label": int(rng.integers(len(names))) if shuffle_captions else label, **({"side": side} if sides else {})})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names), **({"side": datasets.Value("string")} if sides else {})})
    infos = {"train": write_split(root, "train", records, features, shard_size=1000)}
    atomic_write_json(root / "prepare.json", {"kind": "real", "license": "cc0-1.0", "splits": splits_manifest(infos)})
    return root


def nearest_colour_accuracy(dataset) -> float:
    """Share of images whose mean colour is nearest to their own label's colour: a classifier independent of the
    model, of its captions and of skinsynth."""
    names = dataset.features["label"].names
    centres = np.array([COLOURS[name] for name in names], dtype=np.float32)
    right = 0
    for row in dataset:
        mean = np.asarray(row["image"].convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
        right += int(np.argmin(((centres - mean) ** 2).sum(axis=1)) == row["label"])
    return right / len(dataset)


@pytest.fixture(scope="module")
def toy_recipe():
    return parse_recipe(TOY_RECIPE)


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "toy.yaml"
    path.write_text(json.dumps(TOY_ARCHITECTURE))
    return path


def train_and_generate(tmp_path, toy_recipe, toy_config, shuffle_captions):
    from skinsynth.generate import generate

    data = write_toy_dataset(tmp_path / "toy", shuffle_captions=shuffle_captions)
    model = tmp_path / "model"
    finetune(None, data, toy_recipe, model, method="scratch", size="tiny", config=toy_config, **TOY_TRAINING)
    generate(toy_recipe, str(model), tmp_path / "synthetic", batch_size=36, progress=False)
    return datasets.load_dataset(str(tmp_path / "synthetic"), split="train")


# --- learning, end to end ----------------------------------------------------------------------------------------


def test_a_model_trained_from_scratch_draws_the_class_its_prompt_names(tmp_path, toy_recipe, toy_config):
    """Train on three flat colours, generate through `skinsynth generate`, and check each image's colour with a
    classifier that knows nothing of the model: the class word in the prompt must decide the colour."""
    from diffusers import DiffusionPipeline

    synthetic = train_and_generate(tmp_path, toy_recipe, toy_config, shuffle_captions=False)
    assert len(synthetic) == 36
    assert nearest_colour_accuracy(synthetic) >= 0.9
    model = tmp_path / "model"
    assert type(DiffusionPipeline.from_pretrained(model)).__name__ == "StableDiffusionPipeline"
    metadata = json.loads((model / "skinsynth_model.json").read_text())
    assert metadata["method"] == "scratch" and metadata["base_model"] is None and metadata["steps"] == 700
    assert metadata["autoencoder_final_loss"] < 0.15 and metadata["architecture"]["autoencoder_steps"] == 150
    card = (model / "README.md").read_text()
    assert "trained from scratch" in card and "autoencoder" in card and "cc0-1.0" in card


def test_guidance_against_each_prompt_without_its_class_draws_the_class(tmp_path, toy_config):
    """`--class-dropout` teaches the caption without the class ("a photo of a, spot on the left"); a recipe with
    `class_free_negative` guides against it. The model still draws the prompted colour, and each row records the
    negative prompt it was made with."""
    from skinsynth.generate import generate

    recipe = parse_recipe({**TOY_RECIPE, "attributes": {"side": ["left", "right"]}, "splits": {"train": {"per_class": 12, "attributes": "weighted"}},
                           "prompts": {"templates": ["a photo of a {class}, spot on the {side}", "{class}, {side} spot"], "class_free_negative": True}})
    data = write_toy_dataset(tmp_path / "toy", sides=True)
    model = tmp_path / "model"
    finetune(None, data, recipe, model, method="scratch", size="tiny", config=toy_config, class_dropout=0.2, **TOY_TRAINING)
    assert json.loads((model / "skinsynth_model.json").read_text())["hyperparameters"]["class_dropout"] == 0.2
    generate(recipe, str(model), tmp_path / "synthetic", batch_size=36, progress=False)
    synthetic = datasets.load_dataset(str(tmp_path / "synthetic"), split="train")
    assert nearest_colour_accuracy(synthetic) >= 0.9
    for row in synthetic:
        assert row["negative_prompt"] in (f"a photo of a, spot on the {row['side']}", f"{row['side']} spot")


def test_with_class_words_shuffled_between_captions_the_same_check_fails(tmp_path, toy_recipe, toy_config):
    """The control: same images, same training, but each caption names a random class. The learning test above
    would fail on this model, so it measures the captions' effect, not something the colours give away."""
    synthetic = train_and_generate(tmp_path, toy_recipe, toy_config, shuffle_captions=True)
    assert nearest_colour_accuracy(synthetic) < 0.7


def load_toy_shapes():
    """`dataset_scripts/toy_shapes.py`, a script beside the package, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_shapes", REPO / "dataset_scripts" / "toy_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHAPES_RECIPE = {
    "name": "toy-shapes",
    "license": "cc0-1.0",
    "classes": [{"name": name} for name in ("nodule", "ring", "speckles")],
    "prompts": {"templates": ["a dermatology image of {class}", "{class} lesion"]},
    "splits": {"train": {"per_class": 20}},
    "generation": {"num_inference_steps": 20, "guidance_scale": 3.0, "height": 32, "width": 32, "shard_size": 100, "seed": 5},
}
SHAPES_TRAINING = {"max_steps": 1600, "batch_size": 16, "validation_images": 0, "validate_every": 0, "class_balance": 1.0, "ema": True, "progress": False}


def test_classes_that_differ_only_by_shape_are_drawn_by_class_and_differ_at_one_seed(tmp_path):
    """The toy lesions of dataset_scripts/toy_shapes.py: a disc, a ring and a cluster of speckles, every image at the
    same mean colour. The `tiny` preset's defaults learn them: a shape judge fit on the toy's real images (Fourier
    magnitudes, blind to position and colour) finds the prompted class in at least 80 % of the generated images,
    and with one seed for every class the class word, not the seed, decides what is drawn."""
    from diffusers import DiffusionPipeline
    from sklearn.linear_model import LogisticRegression

    from skinsynth.audit.fidelity import shared_seed_measures
    from skinsynth.finetune.captions import validation_prompts
    from skinsynth.finetune.validation import shared_seed_images
    from skinsynth.generate import generate

    toy = load_toy_shapes()
    recipe = parse_recipe(SHAPES_RECIPE)
    rng = np.random.default_rng(0)
    rows = [{"image": toy.toy_image(kind, 32, rng), "label": label} for label, kind in enumerate(toy.CLASSES) for _ in range(150)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(toy.CLASSES))})
    data = tmp_path / "toy"
    atomic_write_json(data / "prepare.json", {"kind": "real", "license": "cc0-1.0", "splits": splits_manifest({"train": write_split(data, "train", rows, features, shard_size=1000)})})
    judge = LogisticRegression(max_iter=3000).fit(toy.shape_features([r["image"] for r in rows]), [r["label"] for r in rows])

    model = tmp_path / "model"
    finetune(None, data, recipe, model, method="scratch", size="tiny", **SHAPES_TRAINING)
    generate(recipe, str(model), tmp_path / "synthetic", batch_size=30, progress=False)
    synthetic = datasets.load_dataset(str(tmp_path / "synthetic"), split="train")
    predicted = judge.predict(toy.shape_features(synthetic["image"]))
    assert (predicted == np.array(synthetic["label"])).mean() >= 0.8

    pipe = DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    images = shared_seed_images(pipe, validation_prompts(recipe, [c.text for c in recipe.classes], 6), recipe, seed=0)
    measures = shared_seed_measures(images, np.stack([judge.predict(toy.shape_features(row)) for row in images]), np.arange(3))
    assert measures["prompt_following"] >= 0.8 and measures["seed_following"] < 0.7
    assert measures["class_to_seed_distance"] > 0.5  # same noise, other class word: another picture


# --- resume across the two stages ------------------------------------------------------------------------------


def test_a_run_resumed_in_the_autoencoder_stage_ends_where_an_uninterrupted_one_does(tmp_path, toy_recipe, toy_config):
    from safetensors.torch import load_file

    data = write_toy_dataset(tmp_path / "toy", per_class=4)
    options = {**TOY_TRAINING, "config": toy_config, "size": "tiny", "method": "scratch", "ema": True, "checkpoint_every": 2}
    architecture = {**TOY_ARCHITECTURE, "autoencoder_steps": 3}
    toy_config.write_text(json.dumps(architecture))
    try:
        whole = finetune(None, data, toy_recipe, tmp_path / "whole", **{**options, "max_steps": 6})
        # Stopped at step 4, then the step-4 checkpoint lost: the run resumes from step 2, inside the first stage.
        finetune(None, data, toy_recipe, tmp_path / "resumed", **{**options, "max_steps": 4})
        checkpoints = tmp_path / "resumed.checkpoints"
        assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
        import shutil

        shutil.rmtree(checkpoints / "checkpoint-4")
        resumed = finetune(None, data, toy_recipe, tmp_path / "resumed", **{**options, "max_steps": 6}, resume=True)
    finally:
        toy_config.write_text(json.dumps(TOY_ARCHITECTURE))
    assert resumed.losses == whole.losses and len(whole.losses) == 6
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(tmp_path / "whole" / part), load_file(tmp_path / "resumed" / part)
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part
    scales = [json.loads((tmp_path / run / "vae" / "config.json").read_text())["scaling_factor"] for run in ("whole", "resumed")]
    assert scales[0] == scales[1] and scales[0] != 0.18215  # measured on the data, not Stable Diffusion's


# --- architecture and vocabulary (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize("size", list(ARCHITECTURES))
def test_every_preset_is_a_valid_architecture_whose_resolution_fits_it(size):
    architecture = load_architecture(size, None)
    check_resolution(architecture, architecture.resolution)


def test_a_config_file_overrides_the_preset_field_by_field(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text("unet_channels: [64, 128]\nautoencoder_steps: 5\n")
    architecture = load_architecture("cpu-small", path)
    assert architecture.unet_channels == (64, 128) and architecture.autoencoder_steps == 5
    assert architecture.autoencoder_channels == tuple(ARCHITECTURES["cpu-small"]["autoencoder_channels"])
    path.write_text("unet_channel: [64]\n")
    with pytest.raises(SkinsynthError, match="`unet_channel`"):
        load_architecture("cpu-small", path)
    with pytest.raises(SkinsynthError, match="`--size huge`"):
        load_architecture("huge", None)


def test_the_tokenizer_spells_every_caption_word_as_one_token(tmp_path, toy_recipe):
    from transformers import CLIPTokenizer

    from skinsynth.bpe import write_tokenizer

    words = caption_words(toy_recipe)
    assert {"photo", "red", "lesion", "close", "up"} <= set(words) and "class" not in words
    write_tokenizer(tmp_path / "tok", words, 16)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer.tokenize("a photo of a green lesion") == ["a</w>", "photo</w>", "of</w>", "a</w>", "green</w>", "lesion</w>"]
    assert tokenizer.model_max_length == 16
    write_tokenizer(tmp_path / "again", words, 16)  # deterministic: a resumed run rebuilds the same vocabulary
    assert all((tmp_path / "tok" / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in ("vocab.json", "merges.txt"))


# --- bad input: one clear error, exit code 2, nothing written ---------------------------------------------------


def scratch_cli(data, recipe_path, out, *extra):
    return main(["-q", "finetune", "--method", "scratch", "--data", str(data), "--recipe", str(recipe_path), "--out", str(out), "--size", "tiny", "--max-steps", "200", *extra])


@pytest.fixture
def toy_recipe_file(tmp_path, toy_recipe):
    path = tmp_path / "toy.yaml"
    path.write_text(toy_recipe.to_yaml())
    return path


def test_a_dataset_with_one_class_is_refused(tmp_path, toy_recipe_file, capsys):
    data = write_toy_dataset(tmp_path / "one", classes=("red",))
    recipe = parse_recipe({**TOY_RECIPE, "classes": [{"name": "red"}]})
    (tmp_path / "one.yaml").write_text(recipe.to_yaml())
    assert scratch_cli(data, tmp_path / "one.yaml", tmp_path / "out") == 2
    assert "single class" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_resolution_the_autoencoder_cannot_divide_is_refused(tmp_path, toy_recipe_file, capsys):
    data = write_toy_dataset(tmp_path / "toy", per_class=2)
    assert scratch_cli(data, toy_recipe_file, tmp_path / "out", "--size", "cpu-small", "--resolution", "40") == 2  # 4x autoencoder, 4x UNet
    err = capsys.readouterr().err
    assert "`--resolution 40` is not a multiple of 16" in err and err.count("error:") == 1 and not (tmp_path / "out").exists()


def test_a_folder_holding_another_run_is_left_untouched(tmp_path, toy_recipe_file, capsys):
    data = write_toy_dataset(tmp_path / "toy", per_class=2)
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "finetune_config.json").write_text(json.dumps({"identity": {"base_model": "somebody/else"}}))
    (other / "model_index.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    assert scratch_cli(data, toy_recipe_file, other) == 2
    assert "holds a fine-tuning run already" in capsys.readouterr().err
    assert scratch_cli(data, toy_recipe_file, other, "--resume") == 2
    assert "holds a run with another" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before


@pytest.mark.parametrize(("extra", "message"), [
    (["--base", "some/model"], "`--base`: `--method scratch` trains every weight"),
    (["--max-steps", "100"], "leaves no step for the UNet"),
])
def test_options_that_make_no_sense_from_scratch_are_refused(tmp_path, toy_recipe_file, capsys, extra, message):
    data = write_toy_dataset(tmp_path / "toy", per_class=2)
    assert scratch_cli(data, toy_recipe_file, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_architecture_options_belong_to_scratch_and_base_to_the_others(tmp_path, toy_recipe_file):
    with pytest.raises(SkinsynthError, match="`--size`"):
        finetune("some/model", tmp_path, toy_recipe_file, tmp_path / "out", method="lora", size="tiny")
    with pytest.raises(SkinsynthError, match="`--base` is required"):
        finetune(None, tmp_path, toy_recipe_file, tmp_path / "out", method="lora")
