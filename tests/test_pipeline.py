"""Loading pipelines: safetensors only (pickled LoRA and textual-inversion weights need an explicit opt-in), custom
classes named in model_index.json are refused with one clear line, and the tiny offline pipeline has Stable
Diffusion's latent geometry."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from skinsynth.cli import main
from skinsynth.errors import PipelineError
from skinsynth.pipeline import load_pipeline

from .conftest import DEMO_RECIPE


@pytest.fixture(scope="module")
def pickled_lora(tiny_pipeline_dir, tmp_path_factory):
    """A LoRA for the tiny pipeline saved the old way, as a pickled `pytorch_lora_weights.bin`."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    folder = tmp_path_factory.mktemp("lora") / "pickled"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)), safe_serialization=False)
    assert [p.name for p in folder.iterdir()] == ["pytorch_lora_weights.bin"]
    return folder


def test_pickled_lora_is_refused_with_the_conversion_unless_allowed(tiny_pipeline_dir, pickled_lora, tmp_path, capsys):
    with pytest.raises(PipelineError, match=r"holds pickled weights \(pytorch_lora_weights.bin\).*Convert them: python -c .*st.save_file"):
        load_pipeline(str(tiny_pipeline_dir), device="cpu", lora=str(pickled_lora))
    code = main(["-q", "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--lora", str(pickled_lora), "--out", str(tmp_path / "out"), "--limit", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--allow-pickle" in err
    _, info = load_pipeline(str(tiny_pipeline_dir), device="cpu", lora=str(pickled_lora), allow_pickle=True)
    assert info.lora["fingerprint"]


def test_pickled_embeddings_are_refused_unless_allowed(tiny_pipeline_dir, tmp_path):
    embedding = tmp_path / "learned_embeds.bin"
    torch.save({"<melanoma>": torch.zeros(32)}, embedding)
    with pytest.raises(PipelineError, match=r"`--embeddings .*learned_embeds.bin` holds pickled weights"):
        load_pipeline(str(tiny_pipeline_dir), device="cpu", embeddings=[str(embedding)])
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copyfile(embedding, folder / "learned_embeds.bin")
    with pytest.raises(PipelineError, match="holds pickled weights"):
        load_pipeline(str(tiny_pipeline_dir), device="cpu", embeddings=[str(folder)])
    _, info = load_pipeline(str(tiny_pipeline_dir), device="cpu", embeddings=[str(folder)], allow_pickle=True)
    assert info.embeddings[0]["tokens"] == ["<melanoma>"]


def test_a_custom_pipeline_class_as_module_and_class_is_refused(tiny_pipeline_dir, tmp_path, capsys):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_pipeline_dir, custom)
    index = json.loads((custom / "model_index.json").read_text())
    index["_class_name"] = ["my_pipeline", "MyPipeline"]
    (custom / "model_index.json").write_text(json.dumps(index))
    code = main(["-q", "generate", str(DEMO_RECIPE), "--model", str(custom), "--out", str(tmp_path / "out"), "--limit", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "names the custom pipeline class ['my_pipeline', 'MyPipeline']; custom pipelines need --trust-remote-code" in err
    index["_class_name"], index["unet"] = "StableDiffusionPipeline", ["my_module", "MyUNet"]
    (custom / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(PipelineError, match=r"names the custom class \['my_module', 'MyUNet'\] for `unet`; custom code runs only with --trust-remote-code"):
        load_pipeline(str(custom), device="cpu")


def test_the_tiny_pipeline_downsamples_8x_like_stable_diffusion(tiny_pipeline_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64  # its default image size
    with torch.no_grad():
        latents = pipe.vae.encode(torch.zeros(1, 3, 512, 512)).latent_dist.mean
    assert latents.shape == (1, 4, 64, 64)  # SD 1.5's latents at 512 px, not 256x256
