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


DIFFUSERS_LORA_CARD = """---
license: creativeml-openrail-m
base_model: stable-diffusion-v1-5/stable-diffusion-v1-5
tags:
- stable-diffusion
- stable-diffusion-diffusers
- text-to-image
- diffusers
- diffusers-training
- lora
inference: true
---

# LoRA text2image fine-tuning - me/sd-ham-lora
These are LoRA adaption weights for stable-diffusion-v1-5/stable-diffusion-v1-5. The weights were fine-tuned on the marmal88/skin_cancer dataset. You can find some example images in the following. 

![img_0](./image_0.png)
"""


@pytest.fixture(scope="module")
def diffusers_script_lora(tiny_pipeline_dir, tmp_path_factory):
    """The `--output_dir` of diffusers' examples/text_to_image/train_text_to_image_lora.py after `--push_to_hub`:
    the adapter (`save_lora_weights`), the card `save_model_card` writes with its example image, TensorBoard logs,
    and accelerate checkpoints (pickled optimizer and random states beside the adapter)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from PIL import Image

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    folder = tmp_path_factory.mktemp("diffusers-lora") / "sd-ham-lora"
    # with the adapter config in the header, as diffusers' newer LoRA scripts save it (`unet_lora_adapter_metadata`)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(), safe_serialization=True)
    (folder / "README.md").write_text(DIFFUSERS_LORA_CARD)
    Image.new("RGB", (8, 8)).save(folder / "image_0.png")
    (folder / "logs" / "text2image-fine-tune").mkdir(parents=True)
    (folder / "logs" / "text2image-fine-tune" / "events.out.tfevents.1733500000.host.1.0").write_bytes(b"\x00" * 64)
    checkpoint = folder / "checkpoint-500"
    StableDiffusionPipeline.save_lora_weights(checkpoint, unet_lora_layers=layers, safe_serialization=True)
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        torch.save({"state": 1}, checkpoint / name)
    return folder


def test_a_lora_from_diffusers_training_script_is_described_and_fingerprinted_by_its_weights(tiny_pipeline_dir, diffusers_script_lora, tmp_path):
    from skinsynth.generate import generate
    from skinsynth.fingerprint import folder_fingerprint

    folder = diffusers_script_lora
    manifest = generate(DEMO_RECIPE, str(tiny_pipeline_dir), tmp_path / "out", lora=str(folder), limit=2, batch_size=2, device="cpu", progress=False)
    lora = json.loads((tmp_path / "out" / "generation.json").read_text())["model"]["lora"]
    assert lora == manifest["model"]["lora"]
    adapter = lora["finetune"].pop("adapter")["unet"]
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 4 and sorted(adapter["target_modules"]) == ["to_k", "to_out.0", "to_q", "to_v"]
    assert lora["finetune"] == {
        "method": "lora", "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5", "license": "creativeml-openrail-m",
        "tags": ["stable-diffusion", "stable-diffusion-diffusers", "text-to-image", "diffusers", "diffusers-training", "lora"],
        "training_data": "marmal88/skin_cancer",
    }
    assert lora["fingerprint"] == folder_fingerprint(folder / "pytorch_lora_weights.safetensors")
    # more training logs, another checkpoint, an edited card: the same adapter, the same fingerprint
    (folder / "logs" / "text2image-fine-tune" / "events.out.tfevents.1733600000.host.1.0").write_bytes(b"\x01" * 64)
    shutil.copytree(folder / "checkpoint-500", folder / "checkpoint-1000")
    (folder / "README.md").write_text(DIFFUSERS_LORA_CARD + "\nEdited.\n")
    _, info = load_pipeline(str(tiny_pipeline_dir), device="cpu", lora=str(folder))
    assert info.lora["fingerprint"] == lora["fingerprint"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "fine-tuned LoRA | lora on `marmal88/skin_cancer` from base `stable-diffusion-v1-5/stable-diffusion-v1-5`" in card


def test_cpu_offload_is_refused_on_the_cpu_before_anything_loads_or_is_written(tiny_pipeline_dir, tmp_path, capsys):
    code = main(["-q", "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "out"), "--device", "cpu", "--cpu-offload"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "`--cpu-offload` keeps the models in CPU memory" in err and "leave --cpu-offload out" in err
    assert not (tmp_path / "out").exists()


def test_cpu_offload_on_an_accelerator_hands_the_device_to_diffusers_instead_of_moving_the_pipeline(tiny_pipeline_dir, monkeypatch):
    from diffusers import DiffusionPipeline

    offloaded = []
    monkeypatch.setattr("skinsynth.pipeline.check_device", lambda device: device)  # a GPU this machine does not have
    monkeypatch.setattr(DiffusionPipeline, "enable_model_cpu_offload", lambda pipe, device=None: offloaded.append(device))
    monkeypatch.setattr(DiffusionPipeline, "to", lambda pipe, *a, **k: pytest.fail("an offloaded pipeline must not be moved whole"))
    pipe, info = load_pipeline(str(tiny_pipeline_dir), device="cuda:1", dtype="float32", cpu_offload=True)
    assert offloaded == ["cuda:1"] and pipe.unet.device.type == "cpu"
