"""`skinsynth finetune --method dreambooth` on the tiny Stable Diffusion pipeline: one instance token per class, the
base's class images made once through `generate` and reused on `--resume`, the prior term of the loss weighted by
`--prior-loss-weight`, a result that `skinsynth generate` loads with the recipe it wrote, and bad input refused."""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from skinsynth.cli import main
from skinsynth.data import open_dataset
from skinsynth.finetune import finetune
from skinsynth.finetune.captions import class_words, instance_token
from skinsynth.recipe import load_recipe

from . import test_finetune
from .test_finetune import FAST, RECIPE, images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

real_data, recipe = test_finetune.real_data, test_finetune.recipe  # its fixtures: the small real dataset and its recipe
generation = importlib.import_module("skinsynth.generate")  # the module (the package's `generate` is the function)

DREAMBOOTH = {"method": "dreambooth", "learning_rate": 1e-2, "checkpoint_every": 2, **FAST}


@pytest.fixture
def generate_calls(monkeypatch):
    """The recipes `skinsynth.generate.generate` was called with (it still runs)."""
    calls, real = [], generation.generate

    def counting(recipe, *args, **kwargs):
        calls.append(recipe)
        return real(recipe, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", counting)
    return calls


def test_each_class_gets_its_own_instance_token_before_its_text(recipe):
    assert class_words(recipe, "dreambooth") == ["sks melanoma", "ohwx melanocytic nevus", "zwx basal cell carcinoma"]
    tokens = [instance_token(i) for i in range(30)]
    assert len(set(tokens)) == 30 and tokens[12] == "sks2"


def test_class_images_are_made_once_and_reused_on_resume(tiny_pipeline_dir, real_data, recipe, tmp_path, generate_calls):
    from skinsynth.pipeline import load_pipeline

    out, prior = tmp_path / "db", tmp_path / "db.checkpoints" / "prior"
    finetune(str(tiny_pipeline_dir), real_data, recipe, out, max_steps=2, prior_images=2, **DREAMBOOTH)
    assert len(generate_calls) == 1 and generate_calls[0].class_counts("train") == [2, 2, 2]
    manifest = json.loads((prior / "generation.json").read_text())
    assert manifest["status"] == "complete" and manifest["splits"]["train"]["num_rows"] == 6
    # made by the base from the recipe's prompts, without the instance tokens
    assert manifest["recipe"]["classes"] == recipe.to_dict()["classes"] and manifest["recipe"]["prompts"] == RECIPE["prompts"]
    prompts = open_dataset(prior)["train"]["prompt"]
    assert any("of melanoma" in p for p in prompts) and not any("sks" in p for p in prompts)
    shards = {path: path.stat().st_mtime_ns for path in (prior / "data").iterdir()}

    resumed = finetune(str(tiny_pipeline_dir), real_data, recipe, out, max_steps=4, prior_images=2, resume=True, **DREAMBOOTH)
    assert len(generate_calls) == 1, "the resumed run made its class images again"
    assert {path: path.stat().st_mtime_ns for path in (prior / "data").iterdir()} == shards
    # ... and continued exactly where an uninterrupted run is at step 2, paired with the same class images
    straight = finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / "straight", max_steps=4, prior_images=2, **DREAMBOOTH)
    assert resumed.losses == straight.losses
    a, b = (load_file(d / "pytorch_lora_weights.safetensors") for d in (out, tmp_path / "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    record = resumed.metadata["dreambooth"]
    assert record["adapter"] == "lora" and record["instance_tokens"] == {"melanoma": "sks", "nevus": "ohwx", "basal_cell_carcinoma": "zwx"}
    assert record["prior"]["recipe_sha256"] == manifest["identity"]["recipe_sha256"] and record["prior"]["images"] == 6
    assert record["prior"]["base_model"] == resumed.metadata["base_model"] and record["prior"]["base_fingerprint"] == manifest["model"]["fingerprint"]
    assert record["prior"]["folder"] == "../db.checkpoints/prior"
    assert resumed.metadata["hyperparameters"]["prior_images"] == 2 and resumed.metadata["hyperparameters"]["prior_loss_weight"] == 1.0
    assert "DreamBooth" in (out / "README.md").read_text()

    # the recipe written beside the adapter prompts with the instance tokens; generate loads both
    token_recipe = load_recipe(out / "recipe.yaml")
    assert [c.text for c in token_recipe.classes] == class_words(recipe, "dreambooth")
    generated = generation.generate(token_recipe, str(tiny_pipeline_dir), tmp_path / "synthetic", lora=str(out), batch_size=2, limit=2, progress=False)
    assert generated["model"]["lora"]["finetune"]["method"] == "dreambooth"
    base, _ = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    tuned, _ = load_pipeline(str(tiny_pipeline_dir), device="cpu", lora=str(out))
    prompt = "a dermoscopic image of sks melanoma on the back"
    assert not np.allclose(images(base, prompt), images(tuned, prompt))


def test_the_loss_adds_the_class_images_loss_times_its_weight(tiny_pipeline_dir, real_data, recipe, tmp_path):
    """At step 1 (the base's weights, the same draws) the loss is instance + w x prior: linear in w."""
    first = {}
    for weight in (0.0, 1.0, 2.0):
        result = finetune(str(tiny_pipeline_dir), real_data, recipe, tmp_path / f"w{weight}", max_steps=1, prior_images=1, prior_loss_weight=weight, **DREAMBOOTH)
        first[weight] = result.losses[0]
    prior_term = first[1.0] - first[0.0]
    assert prior_term > 1e-3 and first[2.0] - first[1.0] == pytest.approx(prior_term, rel=1e-4)


def test_full_dreambooth_without_prior_images_writes_a_pipeline_generate_loads(tiny_pipeline_dir, real_data, recipe, tmp_path, generate_calls, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    out = tmp_path / "full"
    code = main(["--quiet", "finetune", "--base", str(tiny_pipeline_dir), "--data", str(real_data), "--recipe", str(recipe_file), "--method", "dreambooth",
                 "--dreambooth-adapter", "full", "--prior-images", "0", "--out", str(out), "--max-steps", "2", "--resolution", "32",
                 "--validation-images", "0"])
    assert code == 0 and not generate_calls and f"--model {out}" in capsys.readouterr().out
    metadata = json.loads((out / "skinsynth_model.json").read_text())
    assert metadata["dreambooth"]["adapter"] == "full" and "prior" not in metadata["dreambooth"]
    assert metadata["hyperparameters"]["learning_rate"] == 1e-5  # the full fine-tune's
    manifest = generation.generate(load_recipe(out / "recipe.yaml"), str(out), tmp_path / "synthetic", batch_size=2, limit=2, progress=False)
    assert manifest["model"]["finetune"]["method"] == "dreambooth"


def test_bad_dreambooth_input_exits_2_before_anything_is_written(tiny_pipeline_dir, real_data, recipe, tmp_path, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    out = tmp_path / "out"
    common = ["finetune", "--base", str(tiny_pipeline_dir), "--data", str(real_data), "--recipe", str(recipe_file), "--out", str(out), "--resolution", "32"]
    cases = [
        (["--method", "dreambooth", "--prior-images", "-1"], r"`--prior-images`: .*greater than or equal to 0"),
        (["--method", "dreambooth", "--prior-loss-weight", "-0.5"], r"`--prior-loss-weight`"),
        (["--method", "dreambooth", "--size", "tiny"], r"`--size` .* `--method scratch` only"),
        (["--method", "dreambooth", "--ema"], r"`--ema`"),
        (["--method", "lora", "--prior-images", "10"], r"`--prior-images` is a DreamBooth setting"),
        (["--method", "full", "--dreambooth-adapter", "full"], r"`--dreambooth-adapter` is a DreamBooth setting"),
    ]
    for options, message in cases:
        code = main([*common, *options])
        err = capsys.readouterr().err
        last_line = err.strip().splitlines()[-1]
        assert code == 2 and re.search(message, last_line), err
        assert not out.exists() and not (tmp_path / "out.checkpoints").exists()
