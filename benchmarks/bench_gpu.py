"""Generation and LoRA-training speed and peak memory of every diffusion family, skinsynth against the bare diffusers way.

Each family's pipeline is built offline from its real configs (SD 1.5, SDXL base, SD3 medium, FLUX.1-dev, written
below) at random weights: a network's cost does not depend on its weights. The bare loop is what peer scripts do,
`pipe(prompt, num_images_per_prompt=batch)` and `image.save(...png)`; skinsynth runs its own path (`generate` with a
recipe: per-image seeds, encoding in threads while the next batch denoises, Arrow shards, the card). Both use the same
pipeline object (same dtype, SDPA, channels-last, `torch.compile` when asked) in this process, alternately, best of
`--repeats`, so the figure is a ratio.

    python benchmarks/bench_gpu.py                  # CPU: each architecture scaled down (same classes), 64 px, seconds
    python benchmarks/bench_gpu.py --full           # GPU: the real architectures at each family's native size
    python benchmarks/bench_gpu.py --full --cpu-offload   # the same with the models in CPU memory between uses
    python benchmarks/bench_gpu.py --memory-only    # parameter counts and computed peak memory, nothing allocated

LoRA training (Stable Diffusion 1.5, the family `skinsynth finetune` trains) runs `skinsynth finetune --method lora`
against diffusers' examples/text_to_image/train_text_to_image_lora.py loop at that script's settings, condensed here
(`example_lora_loop`), on the same saved model and a dataset skinsynth generates first: steps per second and the ratio.

The memory table is computed, not measured: parameters counted on the meta device (no weights allocated), times the
bytes of the dtype, plus an estimate of the largest activations (`activation_bytes`). Measured peaks come from the
runs: `torch.cuda.max_memory_allocated` on a GPU, the process's peak RSS (VmHWM, reset per loop) on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# --- the real configs (diffusers' and transformers' config.json of each model, as published) --------------------

CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}
CLIP_G = {"vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280}
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu", "pad_token_id": 0, "eos_token_id": 1}
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}
FLOW_VAE = {**SD_VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False, "sample_size": 1024}

# Scaled down for the CPU: the same classes and block layout, narrow and shallow.
SMALL_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32}
SMALL_T5 = {"d_model": 64, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8}
SMALL_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1}


@dataclass(frozen=True)
class Component:
    """One model of a pipeline: its class (diffusers or transformers), its full-size config and the CPU overrides."""

    cls: str
    config: dict
    small: dict = field(default_factory=dict)
    config_cls: str | None = None  # transformers models take a config object

    def build(self, full: bool, tokenizer=None):
        import diffusers
        import transformers

        config = {**self.config, **({} if full else self.small)}
        if self.config_cls is None:
            return getattr(diffusers, self.cls).from_config(config)
        if self.config_cls == "CLIPTextConfig":  # the token ids the (offline) tokenizer uses
            config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return getattr(transformers, self.cls)(getattr(transformers, self.config_cls)(**config))


def clip(cls: str, config: dict) -> Component:
    return Component(cls, config, SMALL_CLIP, "CLIPTextConfig")


def t5(small_width: int) -> Component:
    return Component("T5EncoderModel", T5_XXL, {**SMALL_T5, "d_model": small_width}, "T5Config")


@dataclass(frozen=True)
class Spec:
    """A family as published: its pipeline class, components, scheduler, native size and default guidance."""

    key: str
    title: str
    pipeline: str
    components: dict[str, Component]
    tokenizers: dict[str, str]  # tokenizer component -> "clip" or "t5"
    scheduler: tuple[str, dict]
    size: int
    guidance: float

    @property
    def denoiser(self) -> str:
        return "unet" if "unet" in self.components else "transformer"


SPECS = (
    Spec(
        "sd15", "Stable Diffusion 1.5", "StableDiffusionPipeline",
        {
            "unet": Component("UNet2DConditionModel", {
                "sample_size": 64, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": 768,
                "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            }, {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "cross_attention_dim": 32}),
            "vae": Component("AutoencoderKL", SD_VAE, SMALL_VAE),
            "text_encoder": clip("CLIPTextModel", CLIP_L),
        },
        {"tokenizer": "clip"}, ("PNDMScheduler", {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "skip_prk_steps": True, "steps_offset": 1}), 512, 7.5,
    ),
    Spec(
        "sdxl", "Stable Diffusion XL base", "StableDiffusionXLPipeline",
        {
            "unet": Component("UNet2DConditionModel", {
                "sample_size": 128, "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048,
                "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            }, {"block_out_channels": [32, 64, 64], "layers_per_block": 1, "attention_head_dim": [2, 4, 4], "cross_attention_dim": 64, "transformer_layers_per_block": [1, 1, 2],
                "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32}),
            "vae": Component("AutoencoderKL", {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025}, SMALL_VAE),
            "text_encoder": clip("CLIPTextModel", CLIP_L),
            "text_encoder_2": clip("CLIPTextModelWithProjection", CLIP_G),
        },
        {"tokenizer": "clip", "tokenizer_2": "clip"},
        ("EulerDiscreteScheduler", {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1, "timestep_spacing": "leading"}), 1024, 5.0,
    ),
    Spec(
        "sd3", "Stable Diffusion 3 medium", "StableDiffusion3Pipeline",
        {
            "transformer": Component("SD3Transformer2DModel", {
                "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24, "attention_head_dim": 64, "num_attention_heads": 24,
                "joint_attention_dim": 4096, "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
            }, {"num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 4, "joint_attention_dim": 64, "caption_projection_dim": 32, "pooled_projection_dim": 64}),
            "vae": Component("AutoencoderKL", {**FLOW_VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609}, SMALL_VAE),
            "text_encoder": clip("CLIPTextModelWithProjection", CLIP_L),
            "text_encoder_2": clip("CLIPTextModelWithProjection", CLIP_G),
            "text_encoder_3": t5(small_width=64),
        },
        {"tokenizer": "clip", "tokenizer_2": "clip", "tokenizer_3": "t5"}, ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}), 1024, 7.0,
    ),
    Spec(
        "flux", "FLUX.1-dev", "FluxPipeline",
        {
            "transformer": Component("FluxTransformer2DModel", {
                "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
                "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56],
            }, {"num_layers": 1, "num_single_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": [4, 4, 8]}),
            "vae": Component("AutoencoderKL", {**FLOW_VAE, "scaling_factor": 0.3611, "shift_factor": 0.1159}, SMALL_VAE),
            "text_encoder": clip("CLIPTextModel", CLIP_L),
            "text_encoder_2": t5(small_width=32),
        },
        {"tokenizer": "clip", "tokenizer_2": "t5"},
        ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}),
        1024, 3.5,
    ),
)


# --- building --------------------------------------------------------------------------------------------------

@contextmanager
def creating_on(device: str, dtype):
    """New parameters are made on `device` in `dtype`: no float32 copy in CPU memory first (Flux is 24 GB in bf16)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_models(spec: Spec, full: bool, device: str, dtype, tokenizers: dict | None = None) -> dict:
    """The pipeline's models at random weights (the meta device allocates nothing: for counting)."""
    tokenizers = tokenizers or {}
    models = {}
    with creating_on(device, dtype):
        for name, component in spec.components.items():
            tokenizer = tokenizers.get(name.replace("text_encoder", "tokenizer"))
            models[name] = component.build(full, tokenizer).eval().requires_grad_(False)
    return models


def build_pipeline(spec: Spec, full: bool, device: str, dtype, folder: Path):
    """The whole pipeline, with offline tokenizers (the tiny test pipelines'): a prompt costs its token count, which
    the pipeline fixes (77 CLIP tokens, T5's `max_sequence_length`), whatever the vocabulary."""
    import diffusers
    import torch

    from skinsynth.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer

    makers = {"clip": tiny_clip_tokenizer, "t5": tiny_t5_tokenizer}
    tokenizers = {name: makers[kind](folder / name) for name, kind in spec.tokenizers.items()}
    torch.manual_seed(0)
    models = build_models(spec, full, device, dtype, tokenizers)
    scheduler_cls, scheduler_config = spec.scheduler
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} if spec.pipeline == "StableDiffusionPipeline" else {}
    pipe = getattr(diffusers, spec.pipeline)(**models, **tokenizers, scheduler=getattr(diffusers, scheduler_cls).from_config(scheduler_config), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def optimize(pipe, spec: Spec, channels_last: bool, compile_denoiser: bool) -> list[str]:
    """GPU settings both loops share. SDPA is diffusers' default attention on torch 2."""
    import torch

    applied = ["sdpa"]
    if channels_last:
        for name in ("unet", "vae"):  # convolutional networks; the transformers have no 4-D activations to reorder
            if hasattr(pipe, name) and name in spec.components:
                getattr(pipe, name).to(memory_format=torch.channels_last)
        applied.append("channels-last")
    if compile_denoiser:
        setattr(pipe, spec.denoiser, torch.compile(getattr(pipe, spec.denoiser), fullgraph=False))
        applied.append("torch.compile")
    return applied


# --- the two loops ---------------------------------------------------------------------------------------------

def family_recipe(spec: Spec, images: int, size: int, steps: int):
    """The demo recipe, one guidance scale (the family's default), every image in one shard."""
    from skinsynth.families import family_for
    from skinsynth.recipe import parse_recipe

    data = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    data["splits"] = {"train": {"total": images}}
    data["generation"].update({"height": size, "width": size, "num_inference_steps": steps, "guidance_scale": spec.guidance, "shard_size": images})
    if not family_for(spec.pipeline).negative_prompt:
        data["prompts"]["negative"] = ""
    return parse_recipe(data, source=f"bench_gpu {spec.key}")


def bare_loop(pipe, spec: Spec, recipe, batch_size: int, out: Path) -> None:
    """The peer-script way: one prompt, `num_images_per_prompt`, save each image as a PNG file, repeat."""
    import torch

    from skinsynth.families import family_for
    from skinsynth.plan import plan_split

    out.mkdir(parents=True)
    generation = recipe.generation
    split_plan = plan_split(recipe, "train")
    first = split_plan.jobs(0, 1)[0]
    negative = {"negative_prompt": first.negative_prompt} if family_for(spec.pipeline).negative_prompt else {}
    for start in range(0, len(split_plan), batch_size):
        images = pipe(
            prompt=first.prompt, **negative, num_images_per_prompt=min(batch_size, len(split_plan) - start), num_inference_steps=generation.num_inference_steps,
            guidance_scale=spec.guidance, height=generation.height, width=generation.width, generator=torch.Generator("cpu").manual_seed(start),
        ).images
        for i, image in enumerate(images):
            image.save(out / f"{start + i:06d}.png")


def skinsynth_run(pipe, spec: Spec, recipe, batch_size: int, out: Path, device: str) -> dict:
    from skinsynth.families import family_for
    from skinsynth.generate import generate
    from skinsynth.pipeline import ModelInfo

    info = ModelInfo(model=f"random-weight {spec.key}", revision=None, commit=None, fingerprint=None, pipeline_class=type(pipe).__name__,
                     scheduler=type(pipe.scheduler).__name__, dtype=str(pipe.dtype).removeprefix("torch."), family=family_for(spec.pipeline).name)
    return generate(recipe, info.model, out, batch_size=batch_size, device=device, progress=False, pipeline=(pipe, info))


class PeakMemory:
    """Peak memory of what runs inside `with`: CUDA memory allocated on a GPU, else the process's peak RSS (VmHWM,
    which Linux resets on writing 5 to /proc/self/clear_refs; elsewhere the peak since the process started)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif Path("/proc/self/clear_refs").exists():
            Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        elif Path("/proc/self/status").exists():
            self.bytes = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
        else:
            import resource

            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure(spec: Spec, args, device: str, dtype) -> dict:
    """Both loops on one pipeline, alternately; best time and highest peak of each."""
    import torch

    size = args.size or (spec.size if args.full else 64)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        pipe = build_pipeline(spec, args.full, "cpu" if args.cpu_offload else device, dtype, tmp / "tokenizers")
        applied = optimize(pipe, spec, args.channels_last, args.compile)
        if args.cpu_offload:  # what `skinsynth generate --cpu-offload` does: each model on the GPU only while it runs
            pipe.enable_model_cpu_offload(device=device)
            applied.append("cpu-offload")
        built = time.perf_counter() - started
        recipe = family_recipe(spec, args.images, size, args.steps)
        warmup = family_recipe(spec, args.batch_size, size, args.steps)  # torch.compile, cuDNN autotuning, caches: for both loops, whose
        bare_loop(pipe, spec, warmup, args.batch_size, tmp / "warmup-bare")  # text embeddings differ in layout (repeated vs one per prompt)
        skinsynth_run(pipe, spec, warmup, args.batch_size, tmp / "warmup-skinsynth", device)
        times, peaks, rejections, shard_rates = {"bare": [], "skinsynth": []}, {"bare": 0, "skinsynth": 0}, 0, []
        for r in range(args.repeats):
            for name in ("bare", "skinsynth"):
                with PeakMemory(device) as peak:
                    started = time.perf_counter()
                    if name == "bare":
                        bare_loop(pipe, spec, recipe, args.batch_size, tmp / f"bare-{r}")
                    else:
                        manifest = skinsynth_run(pipe, spec, recipe, args.batch_size, tmp / f"skinsynth-{r}", device)
                        rejections += sum(manifest["rejections"].values())
                        shard_rates.append(manifest["run"]["timing"]["images_per_second"])
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - started)
                peaks[name] = max(peaks[name], peak.bytes)
        del pipe
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    bare, ours = min(times["bare"]), min(times["skinsynth"])
    return {"family": spec.key, "size": size, "images": args.images, "batch_size": args.batch_size, "steps": args.steps, "settings": applied, "build_s": round(built, 1),
            "bare_img_s": args.images / bare, "skinsynth_img_s": args.images / ours, "ratio": bare / ours, "shard_ratio": max(shard_rates) * bare / args.images,
            "bare_peak_mib": peaks["bare"] / 2**20, "skinsynth_peak_mib": peaks["skinsynth"] / 2**20, "rejected": rejections}


# --- LoRA training: skinsynth finetune against diffusers' example script -----------------------------------------

# examples/text_to_image/train_text_to_image_lora.py as its README runs it: rank 4, AdamW at 1e-4 (weight decay 1e-2),
# constant schedule, batch 1 with 4 accumulation steps, gradient norm clipped at 1, fp16 mixed precision on a GPU.
EXAMPLE_LORA = {"lora_rank": 4, "learning_rate": 1e-4, "batch_size": 1, "gradient_accumulation_steps": 4, "max_grad_norm": 1.0, "weight_decay": 1e-2}


def example_lora_loop(folder: Path, data: Path, out: Path, steps: int, resolution: int, mixed_precision: str) -> None:
    """The example script's training loop, condensed (its logging, validation and checkpoints left out; its per-step
    loss gather and final LoRA save kept): models loaded from `folder`, the `train` split of `data` through
    `load_dataset` and a transform (resize, center crop, random flip; PIL here, torchvision there), captions from the
    `prompt` column."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from datasets import load_dataset
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    from skinsynth.families.stable_diffusion import StableDiffusion

    accumulation = EXAMPLE_LORA["gradient_accumulation_steps"]
    accelerator = Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=accumulation)
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    for model in (unet, vae, text_encoder):
        model.requires_grad_(False)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    rank = EXAMPLE_LORA["lora_rank"]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(StableDiffusion.lora_targets)))
    for model in (unet, vae, text_encoder):
        model.to(accelerator.device, dtype=weight_dtype)
    cast_training_params(unet, dtype=torch.float32)
    parameters = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=EXAMPLE_LORA["learning_rate"], weight_decay=EXAMPLE_LORA["weight_decay"])

    def preprocess(examples):
        pixels = []
        for image in examples["image"]:
            image = image.convert("RGB")
            scale = resolution / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
            left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            if np.random.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
        ids = tokenizer(examples["prompt"], max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt").input_ids
        return {"pixel_values": pixels, "input_ids": ids}

    train = load_dataset(str(data), cache_dir=str(out / "cache"))["train"].with_transform(preprocess)
    loader = torch.utils.data.DataLoader(
        train, shuffle=True, batch_size=EXAMPLE_LORA["batch_size"],
        collate_fn=lambda rows: {"pixel_values": torch.stack([r["pixel_values"] for r in rows]), "input_ids": torch.stack([r["input_ids"] for r in rows])},
    )
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps * accumulation)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    step, train_loss = 0, 0.0
    while step < steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                latents = vae.encode(batch["pixel_values"].to(dtype=weight_dtype)).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device).long()
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                hidden = text_encoder(batch["input_ids"], return_dict=False)[0]
                prediction = unet(noisy, timesteps, hidden, return_dict=False)[0]
                loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
                train_loss += accelerator.gather(loss.repeat(EXAMPLE_LORA["batch_size"])).mean().item() / accumulation
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(parameters, EXAMPLE_LORA["max_grad_norm"])
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step, train_loss = step + 1, 0.0
                if step >= steps:
                    break
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(accelerator.unwrap_model(unet)))
    StableDiffusionPipeline.save_lora_weights(save_directory=str(out / "lora"), unet_lora_layers=layers, safe_serialization=True)


def measure_training(args, device: str) -> dict:
    """Stable Diffusion 1.5 (the family `skinsynth finetune` trains): both loops on one saved pipeline and one
    dataset that skinsynth generates first, alternately, best time and highest peak of each."""
    import torch

    from skinsynth.finetune import finetune

    spec = SPECS[0]
    resolution = args.size or (spec.size if args.full else 64)
    mixed_precision = "fp16" if device == "cuda" else "no"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipe = build_pipeline(spec, args.full, device, torch.float32, tmp / "tokenizers")  # trained from float32 weights, as the example
        recipe = family_recipe(spec, 16, resolution, 2)
        skinsynth_run(pipe, spec, recipe, 4, tmp / "data", device)
        pipe.save_pretrained(tmp / "model", safe_serialization=True)
        del pipe
        times, peaks = {"example": [], "skinsynth": []}, {"example": 0, "skinsynth": 0}
        for r in range(args.repeats):
            for name in ("example", "skinsynth"):
                with PeakMemory(device) as peak:
                    started = time.perf_counter()
                    if name == "example":
                        example_lora_loop(tmp / "model", tmp / "data", tmp / f"example-{r}", args.train_steps, resolution, mixed_precision)
                    else:
                        finetune(str(tmp / "model"), str(tmp / "data"), recipe, tmp / f"skinsynth-{r}", method="lora", max_steps=args.train_steps, resolution=resolution,
                                 mixed_precision=mixed_precision, validate_every=0, validation_images=0, progress=False, **EXAMPLE_LORA)
                    times[name].append(time.perf_counter() - started)
                peaks[name] = max(peaks[name], peak.bytes)
    example, ours = min(times["example"]), min(times["skinsynth"])
    return {"family": spec.key, "resolution": resolution, "steps": args.train_steps, "mixed_precision": mixed_precision, **{k: EXAMPLE_LORA[k] for k in ("batch_size", "gradient_accumulation_steps")},
            "example_steps_s": args.train_steps / example, "skinsynth_steps_s": args.train_steps / ours, "ratio": example / ours,
            "example_peak_mib": peaks["example"] / 2**20, "skinsynth_peak_mib": peaks["skinsynth"] / 2**20}


# --- computed memory -------------------------------------------------------------------------------------------

def parameter_counts(spec: Spec) -> dict[str, int]:
    """Parameters of each full-size model, built on the meta device: shapes only, nothing allocated."""
    import torch

    from skinsynth.tiny import tiny_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:  # CLIP configs take their token ids from a tokenizer
        tokenizer = tiny_clip_tokenizer(Path(tmp) / "clip")
        models = build_models(spec, True, "meta", torch.float32, {name: tokenizer for name, kind in spec.tokenizers.items() if kind == "clip"})
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


def activation_bytes(spec: Spec, batch: int, size: int, dtype_bytes: int) -> dict[str, int]:
    """An estimate of the largest activations alive at once in inference (no autograd, nothing kept between layers).

    VAE decoder: it decodes the whole batch at once; its widest tensor is a block's output upsampled to the next
    resolution (at full size: 256 channels at the image's resolution), and a resnet holds about three such tensors
    (input, normalized, convolved). Denoiser: the widest layer output (UNet: GEGLU's 8x projection at its first
    attention level; transformers: the MLP, 4x the width, plus Flux single blocks' fused QKV), on twice the batch
    with classifier-free guidance (Flux-dev's guidance is distilled: one pass), about four such tensors alive.
    Text encoders and SDPA (flash / memory-efficient, no N x N matrix) are small beside these."""
    vae = spec.components["vae"].config
    channels = list(reversed(vae["block_out_channels"]))
    latent = size // 2 ** (len(channels) - 1)
    widest_vae = max([channels[i] * (latent * 2 ** (i + 1)) ** 2 for i in range(len(channels) - 1)] + [channels[-1] * (latent * 2 ** (len(channels) - 1)) ** 2])
    denoiser = spec.components[spec.denoiser].config
    passes = 1 if spec.key == "flux" else 2
    if spec.denoiser == "unet":
        level = [i for i, kind in enumerate(denoiser["down_block_types"]) if kind.startswith("CrossAttn")][0]
        widest = 8 * denoiser["block_out_channels"][level] * (latent // 2**level) ** 2
    else:
        tokens = (latent // 2) ** 2 + (512 if spec.key == "flux" else 77 + 256)  # image patches + text tokens
        width = denoiser["num_attention_heads"] * denoiser["attention_head_dim"]
        widest = tokens * width * (4 + 3 if spec.key == "flux" else 4)
    return {"vae": 3 * batch * widest_vae * dtype_bytes, spec.denoiser: 4 * passes * batch * widest * dtype_bytes}


def computed_memory(spec: Spec, counts: dict[str, int], batch: int, dtype_bytes: int = 2) -> dict:
    """Peak accelerator memory: every model resident plus the larger of the two activation peaks (they do not overlap
    in time); with `--cpu-offload`, the largest of (one model + its activations)."""
    activations = activation_bytes(spec, batch, spec.size, dtype_bytes)
    weights = {name: n * dtype_bytes for name, n in counts.items()}
    return {"weights": sum(weights.values()), "resident": sum(weights.values()) + max(activations.values()),
            "offloaded": max(weights[name] + activations.get(name, 0) for name in weights)}


# --- the report ------------------------------------------------------------------------------------------------

def gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


def memory_table(specs) -> list[dict]:
    print("\nComputed, not measured: parameters counted on the meta device, weights in bf16/fp16 (2 bytes), activations estimated (`activation_bytes`).")
    print("| family | native size | parameters (denoiser / all) | weights GiB | peak GiB, batch 1 | peak GiB, batch 4 | peak GiB, batch 1, --cpu-offload |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for spec in specs:
        counts = parameter_counts(spec)
        one, four = computed_memory(spec, counts, 1), computed_memory(spec, counts, 4)
        rows.append({"family": spec.key, "parameters": counts, "computed_peak_bytes": {"batch_1": one["resident"], "batch_4": four["resident"], "batch_1_cpu_offload": one["offloaded"]}})
        print(f"| {spec.title} | {spec.size} | {counts[spec.denoiser] / 1e9:.2f}B / {sum(counts.values()) / 1e9:.2f}B | {gib(one['weights'])} | {gib(one['resident'])} | {gib(four['resident'])} | {gib(one['offloaded'])} |", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the real architectures at native sizes (a GPU: FLUX.1-dev alone is 24 GB of bf16 weights)")
    parser.add_argument("--families", nargs="+", choices=[s.key for s in SPECS], default=[s.key for s in SPECS])
    parser.add_argument("--size", type=int, default=None, help="image side (default: each family's native size with --full, else 64)")
    parser.add_argument("--images", type=int, default=8, help="images per loop (default: 8)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 10 with --full, enough that a run's fixed costs weigh under 1 %%; else 2)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times; best time counts")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="UNet and VAE in channels-last (default: on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (slow to start; worth it for long runs)")
    parser.add_argument("--train-steps", type=int, default=None, help="LoRA training: optimizer steps per run (default: 20 with --full, else 3; 0 skips training)")
    parser.add_argument("--cpu-offload", action="store_true", help="measure with the models in CPU memory, each moved to the GPU only while it runs (a GPU)")
    parser.add_argument("--memory-only", action="store_true", help="only the computed memory table (no model is allocated)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import diffusers.utils.logging
    import torch
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()  # loading bars, in the middle of the tables
    transformers.utils.logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.cpu_offload and (device == "cpu" or args.compile):
        parser.error("--cpu-offload needs a GPU and is measured without --compile")
    specs = [s for s in SPECS if s.key in args.families]
    results = {"memory": memory_table(specs), "generation": []}
    if not args.memory_only:
        dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
        args.steps = args.steps or (10 if args.full else 2)
        args.channels_last = device == "cuda" if args.channels_last is None else args.channels_last
        machine = torch.cuda.get_device_name() if device == "cuda" else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
        scale = ("full-size architectures" if args.full else "architectures scaled down (same classes)") + (f", {args.size} px" if args.size else ", native sizes" if args.full else ", 64 px")
        print("\nratio: bare loop time / skinsynth time, whole runs (>1: skinsynth faster); shards only: without what a run does once (output checks, manifest, the dataset card).")
        print(f"Generation, {machine}, {str(dtype).removeprefix('torch.')}, random weights, {scale}; measured. Peak: {'CUDA memory allocated' if device == 'cuda' else 'process RSS'}.")
        print("| family | size | images | batch | steps | settings | bare loop img/s | skinsynth img/s | ratio | ratio, shards only | peak MiB bare / skinsynth |\n| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        for spec in specs:
            r = measure(spec, args, device, dtype)
            results["generation"].append(r)
            note = f" ({r['rejected']} images rejected and remade: ratio not comparable)" if r["rejected"] else ""
            print(f"| {spec.title} | {r['size']} | {r['images']} | {r['batch_size']} | {r['steps']} | {', '.join(r['settings'])} | {r['bare_img_s']:.2f} | {r['skinsynth_img_s']:.2f} | {r['ratio']:.2f}{note} | {r['shard_ratio']:.2f} | {r['bare_peak_mib']:.0f} / {r['skinsynth_peak_mib']:.0f} |", flush=True)
    args.train_steps = (20 if args.full else 3) if args.train_steps is None else args.train_steps
    if not args.memory_only and args.train_steps and not args.cpu_offload:
        r = measure_training(args, device)
        results["training"] = [r]
        print(f"\nLoRA training, Stable Diffusion 1.5, {machine}, mixed precision {r['mixed_precision']}, batch {r['batch_size']} x {r['gradient_accumulation_steps']} accumulation, "
              "rank 4; measured. ratio: example loop time / skinsynth time, whole runs (loading, training, saving).")
        print("| resolution | steps | example script steps/s | skinsynth steps/s | ratio | peak MiB example / skinsynth |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| {r['resolution']} | {r['steps']} | {r['example_steps_s']:.2f} | {r['skinsynth_steps_s']:.2f} | {r['ratio']:.2f} | {r['example_peak_mib']:.0f} / {r['skinsynth_peak_mib']:.0f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
