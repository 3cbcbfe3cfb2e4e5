"""`skinsynth finetune` on the tiny SDXL, SD3 and Flux pipelines (tests/tiny_families.py): a few LoRA steps lower
each family's own training loss on a fixed batch, the adapter loads in plain diffusers (`pipe.load_lora_weights`)
and in `skinsynth generate --lora`; `full` trains the denoiser into a loadable pipeline; a method the family does not
have is refused with exit code 2 before anything loads."""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest
import torch

from skinsynth.cli import main
from skinsynth.data import label_names, open_dataset
from skinsynth.families import family_of_folder
from skinsynth.finetune import build_captioner, finetune
from skinsynth.finetune.batches import TrainingRows, collate
from skinsynth.finetune.losses import Caches
from skinsynth.recipe import parse_recipe

from .test_finetune import RECIPE, write_real_dataset
from .tiny_families import TINY_BUILDERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"resolution": 64, "batch_size": 6, "validation_images": 0, "progress": False}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    for name, build in TINY_BUILDERS.items():
        build(root / name)
    return {name: root / name for name in TINY_BUILDERS}


@pytest.fixture(scope="module")
def real_data(ham10000_dir, tmp_path_factory):
    """Six real images (two per class): one batch of `FAST`, seen whole at every step."""
    return write_real_dataset(tmp_path_factory.mktemp("real") / "ham", ham10000_dir, per_class=2)


def family_recipe(name: str):
    data = copy.deepcopy(RECIPE)
    data["generation"].update(height=64, width=64)
    if name == "flux":  # Flux has no negative prompt
        del data["prompts"]["negative"]
    return parse_recipe(data)


def fixed_batch(folder, data, recipe):
    """Every training row at epoch 0, unflipped: the batch the loss is measured on before and after training."""
    from transformers import CLIPTokenizer

    dataset = open_dataset(str(data), required_splits=("train",))
    captioner = build_captioner(recipe, label_names(dataset), dataset["train"].column_names, method="lora")
    rows = TrainingRows(dataset["train"], captioner, CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"), 64, flip=False)
    return collate([rows[(i, 0)] for i in range(len(rows))])


def mean_loss(pipe, folder, batch, recipe, draws=8):
    """The family's own training loss of `pipe` on `batch`, averaged over fixed draws of noise and timesteps."""
    family = family_of_folder(folder)
    scheduler = family.training_scheduler(folder)
    denoiser = getattr(pipe, family.denoiser)
    with torch.no_grad():
        losses = [
            family.training_loss(pipe, denoiser, scheduler, batch, torch.Generator().manual_seed(seed), torch.float32, recipe=recipe, snr_gamma=0.0, caches=Caches()).item()
            for seed in range(draws)
        ]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_lora_lowers_the_family_loss_loads_in_diffusers_and_generates(name, tiny_models, real_data, tmp_path):
    from diffusers import DiffusionPipeline
    from huggingface_hub import ModelCard
    from safetensors import safe_open

    folder, recipe = tiny_models[name], family_recipe(name)
    out = tmp_path / "lora"
    result = finetune(str(folder), real_data, recipe, out, method="lora", max_steps=12, learning_rate=3e-2, **FAST)
    assert result.metadata["method"] == "lora" and len(result.losses) == 12
    family = family_of_folder(folder)
    tags = ModelCard.load(out / "README.md").data.tags  # the card tags the family it adapts, not Stable Diffusion for all
    assert family.name in tags and "stable-diffusion" not in tags and result.metadata["family"] == family.name
    denoiser = family.denoiser
    with safe_open(str(out / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert f.keys() and all(key.startswith(f"{denoiser}.") for key in f.keys())

    batch = fixed_batch(folder, real_data, recipe)
    pipe = DiffusionPipeline.from_pretrained(folder)
    before = mean_loss(pipe, folder, batch, recipe)
    pipe.load_lora_weights(out)  # plain diffusers, as a user of the folder would
    after = mean_loss(pipe, folder, batch, recipe)
    assert after < 0.99 * before, (before, after)  # measured: SDXL -5%, SD3 -2%, Flux -8% (random weights: mostly irreducible noise)

    dataset = tmp_path / "generated"
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    assert main(["generate", str(recipe_file), "--model", str(folder), "--lora", str(out), "--out", str(dataset), "--device", "cpu", "--batch-size", "6"]) == 0
    manifest = json.loads((dataset / "generation.json").read_text())
    assert manifest["model"]["lora"]["finetune"]["method"] == "lora"


@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_full_finetuning_trains_the_denoiser_into_a_loadable_pipeline(name, tiny_models, real_data, tmp_path):
    from diffusers import DiffusionPipeline

    folder, recipe = tiny_models[name], family_recipe(name)
    finetune(str(folder), real_data, recipe, tmp_path / "full", method="full", max_steps=2, learning_rate=1e-3, **FAST)
    denoiser = family_of_folder(folder).denoiser
    base, tuned = (getattr(DiffusionPipeline.from_pretrained(path), denoiser) for path in (folder, tmp_path / "full"))
    changed = [not torch.equal(a, b) for a, b in zip(base.state_dict().values(), tuned.state_dict().values())]
    assert any(changed)
    assert np.allclose(*(DiffusionPipeline.from_pretrained(path).vae.encoder.conv_in.weight.detach().numpy() for path in (folder, tmp_path / "full")))


@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_dreambooth_with_prior_preservation_trains_each_family_and_generates(name, tiny_models, real_data, tmp_path):
    """The class images come from the family's own generation, and their term enters its own loss: with weight 0 the
    first step's loss (the base's weights, the same draws) is the instance loss alone, with weight 1 it is larger."""
    from skinsynth.recipe import load_recipe

    folder, recipe = tiny_models[name], family_recipe(name)
    first = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"db-{weight}"
        result = finetune(str(folder), real_data, recipe, out, method="dreambooth", prior_images=1, prior_loss_weight=weight, max_steps=1, learning_rate=1e-3, **FAST)
        first[weight] = result.losses[0]
        assert result.metadata["dreambooth"]["prior"]["images"] == 3
    assert first[1.0] > first[0.0] + 1e-3, first
    token_recipe = load_recipe(out / "recipe.yaml")
    assert token_recipe.classes[0].text == "sks melanoma"
    dataset = tmp_path / "generated"
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(token_recipe.to_yaml())
    assert main(["generate", str(recipe_file), "--model", str(folder), "--lora", str(out), "--out", str(dataset), "--device", "cpu", "--batch-size", "6"]) == 0
    assert json.loads((dataset / "generation.json").read_text())["model"]["lora"]["finetune"]["method"] == "dreambooth"


@pytest.mark.parametrize("name, method", [("sd3", "textual-inversion"), ("flux", "textual-inversion"), ("sdxl", "textual-inversion")])
def test_a_method_the_family_does_not_have_is_refused_before_anything_loads(name, method, tiny_models, real_data, tmp_path, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(family_recipe(name).to_yaml())
    out = tmp_path / "out"
    assert main(["finetune", "--base", str(tiny_models[name]), "--data", str(real_data), "--recipe", str(recipe_file), "--out", str(out), "--method", method]) == 2
    error = capsys.readouterr().err
    assert f"--method {method}" in error and "--method lora" in error
    assert not out.exists() and not (tmp_path / "out.checkpoints").exists()


def test_snr_gamma_is_refused_for_a_flow_matching_family(tiny_models, real_data, tmp_path):
    from skinsynth.errors import SkinsynthError

    with pytest.raises(SkinsynthError, match="rectified-flow"):
        finetune(str(tiny_models["flux"]), real_data, family_recipe("flux"), tmp_path / "out", snr_gamma=5.0, **FAST)


def test_an_interrupted_flux_lora_resumes_to_the_same_adapter(tiny_models, real_data, tmp_path):
    """The transformer's adapter and the cached text embeddings survive a resume: two steps, then two more, equal
    four straight steps bit for bit."""
    from safetensors.torch import load_file

    folder, recipe = str(tiny_models["flux"]), family_recipe("flux")
    options = {"method": "lora", "learning_rate": 1e-2, "checkpoint_every": 2, **FAST}
    straight = finetune(folder, real_data, recipe, tmp_path / "straight", max_steps=4, **options)
    finetune(folder, real_data, recipe, tmp_path / "run", max_steps=2, **options)
    resumed = finetune(folder, real_data, recipe, tmp_path / "run", max_steps=4, resume=True, **options)
    assert resumed.losses == straight.losses
    a, b = (load_file(tmp_path / name / "pytorch_lora_weights.safetensors") for name in ("straight", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["sd3"])
def test_cache_latents_encodes_each_image_once_and_trains_the_same(name, tiny_models, real_data, tmp_path, monkeypatch):
    """Six rows, six steps of the whole set: without the cache the VAE encodes 36 images, with it each (row, mirrored)
    once, and the losses are the uncached run's up to float rounding."""
    from diffusers import AutoencoderKL

    encode, encoded = AutoencoderKL.encode, []

    def counting(self, pixels, *args, **kwargs):
        encoded.append(len(pixels))
        return encode(self, pixels, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    folder, recipe = str(tiny_models[name]), family_recipe(name)
    plain = finetune(folder, real_data, recipe, tmp_path / "plain", method="lora", max_steps=6, learning_rate=1e-2, **FAST)
    assert sum(encoded) == 36
    encoded.clear()
    cached = finetune(folder, real_data, recipe, tmp_path / "cached", method="lora", max_steps=6, learning_rate=1e-2, cache_latents=True, **FAST)
    assert 6 <= sum(encoded) <= 12
    assert np.allclose(plain.losses, cached.losses, rtol=1e-4)


def test_the_large_families_checkpoint_gradients_unless_told_not_to(tiny_models, tiny_pipeline_dir, real_data, tmp_path):
    sdxl = finetune(str(tiny_models["sdxl"]), real_data, family_recipe("sdxl"), tmp_path / "sdxl", max_steps=1, **FAST)
    assert sdxl.metadata["hyperparameters"]["gradient_checkpointing"] is True
    assert sdxl.metadata["hyperparameters"]["use_8bit_adam"] is (torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None)
    off = finetune(str(tiny_models["sdxl"]), real_data, family_recipe("sdxl"), tmp_path / "off", max_steps=1, gradient_checkpointing=False, **FAST)
    assert off.metadata["hyperparameters"]["gradient_checkpointing"] is False
    sd = finetune(str(tiny_pipeline_dir), real_data, family_recipe("sdxl"), tmp_path / "sd", max_steps=1, **{**FAST, "resolution": 32})
    assert sd.metadata["hyperparameters"]["gradient_checkpointing"] is False and sd.metadata["hyperparameters"]["use_8bit_adam"] is False


def test_sd3_trained_for_a_recipe_without_t5_never_runs_t5(tiny_models, real_data, tmp_path, monkeypatch):
    """`generation.drop_t5` generates without the T5 encoder, so training must read its captions the same way."""
    from transformers import T5EncoderModel

    def refuse(*args, **kwargs):
        raise AssertionError("T5 ran although the recipe drops it")

    monkeypatch.setattr(T5EncoderModel, "forward", refuse)
    recipe = family_recipe("sd3").model_copy(update={"generation": family_recipe("sd3").generation.model_copy(update={"drop_t5": True})})
    result = finetune(str(tiny_models["sd3"]), real_data, recipe, tmp_path / "out", method="lora", max_steps=1, **FAST)
    assert result.metadata["steps"] == 1
