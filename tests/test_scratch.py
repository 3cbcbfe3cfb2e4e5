"""`finetune --method scratch`: a pipeline trained from random weights learns its classes end to end (toy colours,
generated through the normal `generate` path, judged by an independent nearest-mean-colour classifier), with a
shuffled-caption control; resume across both stages; bad input."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from skinsynth.cli import main
from skinsynth.errors import DatasetError, OutputError, SkinsynthError
from skinsynth.finetune import finetune
from skinsynth.finetune.scratch import ARCHITECTURES, caption_words, check_resolution, load_architecture
from skinsynth.recipe import parse_recipe
from skinsynth.shards import atomic_write_json, splits_manifest, write_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}
TOY_RECIPE = {
    "name": "toy-colours",
    "license": "cc0-1.0",
    "classes": [{"name": name, "prompt": f"{name} lesion"} for name in COLOURS],
    "prompts": {"templates": ["a photo of a {class}", "{class} close up"]},
    "splits": {"train": {"per_class": 8}},
    "generation": {"num_inference_steps": 10, "guidance_scale": 2.0, "height": int(os.environ.get("RES", 32)), "width": int(os.environ.get("RES", 32)), "shard_size": 50, "seed": 11},
}
# The `tiny` preset, smaller still: the learning test must stay near a minute on one core.
TOY_ARCHITECTURE = {"resolution": int(os.environ.get("RES", 32)), "autoencoder_channels": eval(os.environ.get("AEC", "[16, 16, 32]")), "autoencoder_steps": int(os.environ.get("AE", 60)), "unet_channels": [32, 48], "text_hidden_size": 32}


def write_toy_dataset(root, per_class=12, shuffle_captions=False, classes=tuple(COLOURS), resolution=32, seed=0):
    """Flat-colour squares with a little noise and a darker blob, one colour per class. With `shuffle_captions`
    each image keeps its colour but carries a random class label: its caption names the wrong class 2 times in 3."""
    rng = np.random.default_rng(seed)
    names = list(classes)
    records = []
    for label, name in enumerate(names):
        for _ in range(per_class):
            pixels = np.array(COLOURS[name], dtype=np.float32) + rng.normal(0, 12, (resolution, resolution, 3))
            y, x = np.mgrid[:resolution, :resolution]
            cy, cx = rng.integers(resolution // 4, 3 * resolution // 4, 2)
            pixels[(y - cy) ** 2 + (x - cx) ** 2 < (resolution // 6) ** 2] *= 0.7
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
            records.append({"image": image, "label": int(rng.integers(len(names))) if shuffle_captions else label})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
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

    data = write_toy_dataset(tmp_path / "toy", shuffle_captions=shuffle_captions, resolution=int(os.environ.get("RES", 32)))
    model = tmp_path / "model"
    finetune(None, data, toy_recipe, model, method="scratch", size="tiny", config=toy_config, max_steps=int(os.environ.get("STEPS", 360)), batch_size=8, learning_rate=float(os.environ.get("LR", 5e-4)),
             validation_images=0, progress=False)
    generate(toy_recipe, str(model), tmp_path / "synthetic", batch_size=24, progress=False)
    return datasets.load_dataset(str(tmp_path / "synthetic"), split="train")
