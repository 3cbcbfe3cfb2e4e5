"""Diffusion families: tiny random-weight SDXL, SD3 and Flux pipelines (tests/tiny_families.py) each generate a dataset
that an interrupted and resumed run reproduces byte for byte; a recipe setting a family does not have (a negative
prompt for Flux) is refused before anything is made; each family's call carries its own keywords."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skinsynth.cli import main
from skinsynth.errors import RecipeError
from skinsynth.families import FAMILIES, family_for, family_of_folder
from skinsynth.generate import generate
from skinsynth.pipeline import load_pipeline
from skinsynth.recipe import load_recipe, parse_recipe
from skinsynth.verify import verify_dataset

from .test_faults import ENV, files, kill_at
from .test_generate import read_rows, small_recipe
from .tiny_families import TINY_BUILDERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILY_OF = {"sdxl": "stable-diffusion-xl", "sd3": "stable-diffusion-3", "flux": "flux"}
VOLATILE = {"generation.json": ("run",)}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    for name, build in TINY_BUILDERS.items():
        build(root / name)
    return {name: root / name for name in TINY_BUILDERS}


def family_recipe(folder: Path, name: str, **generation) -> Path:
    """The demo recipe, small and fast (32 px, 2 steps, 3 train shards + 1 validation), fitted to the family: Flux
    has no negative prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    path = small_recipe(folder, per_class=4, shard_size=4, **generation)
    if name == "flux":
        data = yaml.safe_load(path.read_text())
        del data["prompts"]["negative"]
        path.write_text(yaml.safe_dump(data))
    return path


class Interrupted(Exception):
    pass


def interrupting(pipe, calls: int):
    """`pipe` that stops the run (as Ctrl-C would) at its `calls`-th call, mid-shard."""

    class Interrupting:
        made = 0

        def __call__(self, **kwargs):
            Interrupting.made += 1
            if Interrupting.made == calls:
                raise Interrupted
            return pipe(**kwargs)

    return Interrupting()


@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_each_family_generates_and_an_interrupted_run_resumes_to_the_same_bytes(name, tiny_models, tmp_path):
    recipe = family_recipe(tmp_path, name)
    model = str(tiny_models[name])
    reference = tmp_path / "reference" / "out"  # the same name and depth as the resumed run's: the card names the folder, the manifest the model relative to it
    manifest = generate(recipe, model, reference, batch_size=3, device="cpu", progress=False)
    assert manifest["model"]["family"] == FAMILY_OF[name]
    assert manifest["model"]["pipeline_class"] == json.loads((tiny_models[name] / "model_index.json").read_text())["_class_name"]
    assert f"(family `{FAMILY_OF[name]}`)" in (reference / "README.md").read_text()
    verify_dataset(reference)

    out = tmp_path / "resumed" / "out"
    pipe, info = load_pipeline(model, device="cpu", recipe=load_recipe(recipe))
    with pytest.raises(Interrupted):  # third call: the first shard is written, the second is half made
        generate(recipe, model, out, batch_size=3, device="cpu", progress=False, pipeline=(interrupting(pipe, 3), info))
    assert len(list((out / ".skinsynth" / "shards").glob("*.json"))) == 1
    generate(recipe, model, out, batch_size=3, device="cpu", progress=False)
    assert files(out, VOLATILE) == files(reference, VOLATILE)

    rows = read_rows(reference)
    assert sum(len(split) for split in rows.values()) == 15
    images = {row["image"]["bytes"] for split in rows.values() for row in split}
    assert len(images) == 15  # per-image seeds: no two images alike
    if name == "flux":
        assert {row["negative_prompt"] for row in rows["train"]} == {""}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_each_family_killed_mid_run_resumes_to_the_same_files(name, tiny_models, tmp_path):
    """`kill -9` after the first shard's record and a little more, then the same command: the files of one
    uninterrupted run, byte for byte."""
    recipe = family_recipe(tmp_path, name)
    reference = tmp_path / "reference" / "out"
    generate(recipe, str(tiny_models[name]), reference, batch_size=3, device="cpu", progress=False)
    out = tmp_path / "resumed" / "out"  # the reference's depth: the manifest names the model relative to the folder
    command = [sys.executable, "-m", "skinsynth", "-q", "generate", str(recipe), "--model", str(tiny_models[name]), "--out", str(out), "--batch-size", "3", "--device", "cpu"]
    records = out / ".skinsynth" / "shards"
    kill_at(command, lambda: records.is_dir() and any(records.glob("*.json")), delay=0.05)
    assert len(list(records.glob("*.json"))) < 4, "the run finished before the kill: nothing was resumed"
    assert subprocess.run(command, env=ENV).returncode == 0
    assert files(out, VOLATILE) == files(reference, VOLATILE)


def test_a_flux_recipe_with_a_negative_prompt_is_refused_before_anything_is_made(tiny_models, tmp_path, capsys):
    recipe = small_recipe(tmp_path)  # the demo's negative prompt: "text, watermark, drawing"
    out = tmp_path / "out"
    assert main(["-q", "generate", str(recipe), "--model", str(tiny_models["flux"]), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Flux has no negative prompt: it is guidance-distilled") and "remove `negative` from the recipe's `prompts`" in err
    assert err.count("\n") == 1
    assert not out.exists()  # nothing written, not even the state folder


def test_a_schnell_style_flux_refuses_a_guidance_it_would_ignore(tmp_path, capsys):
    from .tiny_families import tiny_flux

    tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    recipe = family_recipe(tmp_path, "flux")  # guidance_scale 2.0 and 4.0, from the demo
    out = tmp_path / "out"
    assert main(["-q", "generate", str(recipe), "--model", str(tmp_path / "schnell"), "--out", str(out), "--device", "cpu"]) == 2
    assert "this Flux model has no guidance input (a schnell-style model)" in capsys.readouterr().err and not out.exists()
    manifest = generate(family_recipe(tmp_path / "zero", "flux", guidance_scale=0.0), str(tmp_path / "schnell"), out, device="cpu", limit=1, progress=False)
    assert manifest["model"]["family"] == "flux" and {row["guidance_scale"] for row in read_rows(out)["train"]} == {0.0}


def test_sd3_without_t5_loads_without_it_and_makes_other_images(tiny_models, tmp_path):
    recipe = family_recipe(tmp_path, "sd3", drop_t5=True, max_sequence_length=16)
    pipe, info = load_pipeline(str(tiny_models["sd3"]), device="cpu", recipe=load_recipe(recipe))
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None and info.family == "stable-diffusion-3"
    without = generate(recipe, str(tiny_models["sd3"]), tmp_path / "without", device="cpu", limit=2, progress=False)
    assert without["recipe"]["generation"]["drop_t5"] is True
    with_t5 = generate(family_recipe(tmp_path / "t5", "sd3", max_sequence_length=16), str(tiny_models["sd3"]), tmp_path / "with", device="cpu", limit=2, progress=False)
    images = [[row["image"]["bytes"] for row in read_rows(tmp_path / folder)["train"]] for folder in ("without", "with")]
    assert images[0] != images[1]
    assert "| text encoders | the two CLIP encoders only (T5 not loaded) |" in (tmp_path / "without" / "README.md").read_text()
    assert with_t5["identity"]["recipe_sha256"] != without["identity"]["recipe_sha256"]


def demo_recipe(**changes):
    data = yaml.safe_load((Path(__file__).parent.parent / "examples" / "demo.yaml").read_text())
    for key, value in changes.items():
        section, field = key.split("__")
        if value is None:
            del data[section][field]
        else:
            data[section][field] = value
    return parse_recipe(data)


@pytest.mark.parametrize(
    "family, changes, message",
    [
        ("flux", {}, r"Flux has no negative prompt.*remove `negative` from the recipe's `prompts`"),
        ("flux", {"prompts__negative": None, "prompts__class_free_negative": True}, r"Flux takes no negative prompt, so `prompts.class_free_negative` would be ignored"),
        ("stable-diffusion", {"generation__max_sequence_length": 128}, r"`generation.max_sequence_length` \(128\) is the T5 prompt length of Stable Diffusion 3 and Flux, which Stable Diffusion does not take: remove it"),
        ("stable-diffusion-xl", {"generation__max_sequence_length": 128}, r"which Stable Diffusion XL does not take"),
        ("flux", {"prompts__negative": None, "generation__drop_t5": True}, r"`generation.drop_t5` is for Stable Diffusion 3 .* Flux cannot run without its text encoders"),
        ("flux", {"prompts__negative": None, "generation__height": 72}, r"`generation.height` is 72; Flux makes images whose sides are multiples of 16: use 64 or 80"),
        ("stable-diffusion-3", {"generation__scheduler": "ddim"}, r"`generation.scheduler: ddim` does not fit Stable Diffusion 3, a flow-matching model: use a FlowMatch\* scheduler"),
        ("stable-diffusion", {"generation__scheduler": "FlowMatchEulerDiscreteScheduler"}, r"does not fit Stable Diffusion, a diffusion model: FlowMatch\* schedulers are for SD3 and Flux"),
    ],
)
def test_a_setting_the_family_does_not_have_is_refused_with_the_fix(family, changes, message):
    with pytest.raises(RecipeError, match=message):
        next(f for f in FAMILIES if f.name == family).check(demo_recipe(**changes))


def test_each_family_maps_the_recipe_onto_its_own_keywords():
    recipe = demo_recipe(prompts__negative=None, generation__max_sequence_length=64)
    common = {"prompt": ["p"], "num_inference_steps": 4, "guidance_scale": 3.5, "height": 64, "width": 64}
    flux = family_for("FluxPipeline").call_arguments(["p"], [""], 3.5, 4, recipe)
    assert flux == {**common, "max_sequence_length": 64}  # no negative prompt at all
    assert family_for("StableDiffusion3Pipeline").call_arguments(["p"], [""], 3.5, 4, recipe) == {**common, "negative_prompt": [""], "max_sequence_length": 64}
    sd = demo_recipe()
    assert family_for("StableDiffusionXLPipeline").call_arguments(["p"], ["n"], 3.5, 4, sd) == {
        **common, "negative_prompt": ["n"], "original_size": (64, 64), "target_size": (64, 64), "crops_coords_top_left": (0, 0),
    }
    assert family_for("StableDiffusionPipeline").call_arguments(["p"], ["n"], 3.5, 4, sd) == {**common, "negative_prompt": ["n"]}
    other = family_for("AuraFlowPipeline")
    assert other.name == "other"  # the generic family: Stable Diffusion's keywords, as before
    other.check(demo_recipe(generation__scheduler="FlowMatchEulerDiscreteScheduler"))  # it cannot tell which schedulers fit: no refusal


def test_the_family_is_read_from_the_folder_before_loading(tiny_models, tiny_pipeline_dir, tmp_path):
    assert {name: family_of_folder(folder).name for name, folder in tiny_models.items()} == FAMILY_OF
    assert family_of_folder(tiny_pipeline_dir).name == "stable-diffusion"
    assert family_of_folder(tmp_path).name == "other"  # no model_index.json: loading says what is wrong


def test_new_settings_left_out_keep_old_recipes_hashes():
    """`max_sequence_length` and `drop_t5` left out do not enter the canonical form: a run started before they existed
    resumes."""
    recipe = demo_recipe()
    assert "max_sequence_length" not in recipe.to_dict()["generation"] and "drop_t5" not in recipe.to_dict()["generation"]
    assert demo_recipe(generation__max_sequence_length=64).fingerprint() != recipe.fingerprint()
