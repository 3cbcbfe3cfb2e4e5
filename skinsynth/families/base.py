"""What every diffusion family shares: how a recipe's generation settings become a pipeline call, and which settings
a family has, and how `skinsynth finetune` trains it: which component denoises, the objective, the LoRA targets.
A family module overrides only where its pipeline differs."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RecipeError, SkinsynthError
from ..recipe import Recipe

METHODS = ("lora", "full", "textual-inversion", "dreambooth", "scratch")


class Family:
    """A kind of text-to-image pipeline (Stable Diffusion, SDXL, SD3, Flux…) and what a recipe may ask of it.

    `check` runs before the model loads: a recipe setting the family does not have is refused with the fix, never
    dropped silently. `load_components` are `from_pretrained` overrides the recipe asks for; `call_arguments` maps
    one batch's settings onto the pipeline's own keywords.
    """

    name = "other"  # recorded in generation.json and the dataset card
    title = "this pipeline"  # for messages
    pipeline_classes: tuple[str, ...] = ()
    negative_prompt = True  # classifier-free guidance with a negative prompt
    flow_matching = False  # flow-matching schedulers (FlowMatch*) instead of diffusion ones
    t5 = False  # reads prompts with a T5 encoder too (`generation.max_sequence_length`)
    optional_t5 = False  # runs without its T5 encoder (`generation.drop_t5`)
    size_multiple = 8  # image sides are multiples of this (VAE factor x patch size)
    # Training: the component that denoises (what `lora` adapts and `full` trains), the methods that fit the family,
    # and the layers LoRA adapts (diffusers' example scripts' defaults).
    denoiser = "unet"
    training_methods: tuple[str, ...] = METHODS
    lora_targets: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
    large_model = False  # billions of weights: gradient checkpointing and 8-bit Adam (where installed) by default

    def check(self, recipe: Recipe, pipe=None) -> None:
        """Refuse a setting this family does not have. `pipe`, once loaded, lets a family check what only its
        weights' configs say (Flux schnell has no guidance)."""
        generation = recipe.generation
        if recipe.prompts.negative and not self.negative_prompt:
            raise RecipeError(self.no_negative_prompt(recipe))
        if recipe.prompts.class_free_negative and not self.negative_prompt:
            raise RecipeError(f"{self.title} takes no negative prompt, so `prompts.class_free_negative` would be ignored: remove it from the recipe")
        if generation.max_sequence_length is not None and not self.t5:
            raise RecipeError(
                f"`generation.max_sequence_length` ({generation.max_sequence_length}) is the T5 prompt length of Stable Diffusion 3 and Flux, "
                f"which {self.title} does not take: remove it from the recipe"
            )
        if generation.drop_t5 and not self.optional_t5:
            raise RecipeError(f"`generation.drop_t5` is for Stable Diffusion 3 (its T5 encoder is optional); {self.title} cannot run without its text encoders: remove it from the recipe")
        for side in ("height", "width"):
            value = getattr(generation, side)
            if value % self.size_multiple:
                raise RecipeError(f"`generation.{side}` is {value}; {self.title} makes images whose sides are multiples of {self.size_multiple}: use {value - value % self.size_multiple or self.size_multiple} or {value - value % self.size_multiple + self.size_multiple}")
        if generation.scheduler is not None and self.pipeline_classes:  # the generic family cannot tell which kind it is
            from ..recipe import scheduler_class_name

            flow = scheduler_class_name(generation.scheduler).startswith("FlowMatch")
            if flow != self.flow_matching:
                kind = "flow-matching model: use a FlowMatch* scheduler" if self.flow_matching else "diffusion model: FlowMatch* schedulers are for SD3 and Flux"
                raise RecipeError(f"`generation.scheduler: {generation.scheduler}` does not fit {self.title}, a {kind} (or leave `scheduler` out for the model's own)")

    def no_negative_prompt(self, recipe: Recipe) -> str:
        return f"{self.title} takes no negative prompt: remove `prompts.negative` ({recipe.prompts.negative!r}) from the recipe"

    def load_components(self, recipe: Recipe) -> dict:
        """Components `from_pretrained` should replace (by default none)."""
        return {}

    def call_arguments(self, prompts: list[str], negative_prompts: list[str], guidance_scale: float, num_inference_steps: int, recipe: Recipe) -> dict:
        """The pipeline's keyword arguments for one batch (the caller adds generators and the output type)."""
        generation = recipe.generation
        arguments = {"prompt": prompts, "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "height": generation.height, "width": generation.width}
        if self.negative_prompt:
            arguments["negative_prompt"] = negative_prompts
        if generation.max_sequence_length is not None:
            arguments["max_sequence_length"] = generation.max_sequence_length
        return arguments

    # --- training (`skinsynth finetune`) ------------------------------------------------------------------------

    def check_training(self, method: str, snr_gamma: float | None) -> None:
        """Refuse, before anything loads, a method or option this family cannot be trained with."""
        if method not in self.training_methods:
            raise SkinsynthError(f"`--method {method}` does not apply to {self.title}, which `skinsynth finetune` trains with {' or '.join(f'`--method {m}`' for m in self.training_methods)}")
        if snr_gamma and self.flow_matching:
            raise SkinsynthError(f"`--snr-gamma` weights a diffusion model's noise-prediction loss; {self.title} is trained with the rectified-flow loss: leave the option out")

    def native_resolution(self, folder: Path) -> int:
        """The image side the base was made for: the denoiser's sample size in latents times the VAE's factor (Flux's
        config has no sample size: its pipeline's default, 128 latents, i.e. 1024 px)."""
        denoiser = json.loads((Path(folder) / self.denoiser / "config.json").read_text())
        vae = json.loads((Path(folder) / "vae" / "config.json").read_text())
        return int(denoiser.get("sample_size") or 128) * 2 ** (len(vae["block_out_channels"]) - 1)

    def training_scheduler(self, folder: Path):
        """The noise schedule training draws from: the base's own, as a DDPM schedule for diffusion models, as a
        flow-matching Euler schedule (its timesteps and sigmas) for flow-matching ones."""
        from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

        return (FlowMatchEulerDiscreteScheduler if self.flow_matching else DDPMScheduler).from_pretrained(folder, subfolder="scheduler")

    def training_loss(self, pipe, denoiser, noise_scheduler, batch: dict, generator, weight_dtype, *, recipe: Recipe, snr_gamma: float, caches):
        """The loss of one batch; `denoiser` is the pipeline's denoiser as accelerate prepared it (call it, not
        `pipe`'s, so that gradients synchronise between processes); `caches` what the method keeps for the run
        (`finetune.losses.Caches`: see `prompt_embeddings` and `--cache-latents`). Stable Diffusion: one CLIP
        encoder's hidden states, from the token ids the data loader made (textual inversion trains that encoder's
        embeddings, so they are not cached)."""
        from ..finetune.losses import diffusion_loss

        return diffusion_loss(pipe.vae, denoiser, pipe.text_encoder, noise_scheduler, batch, generator, weight_dtype, snr_gamma, caches.latents)

    def encode_prompts(self, pipe, captions: list[str], recipe: Recipe) -> dict:
        """The frozen text encoders' outputs for `captions`, batch first (families that cache them per caption)."""
        raise NotImplementedError

    def prompt_embeddings(self, pipe, captions: list[str], recipe: Recipe, cache: dict, device) -> dict:
        """`encode_prompts` of a batch, each caption encoded once per run and kept on the CPU: the text encoders run
        only for captions not seen before (a recipe's captions repeat, so most steps run none)."""
        import torch

        missing = [caption for caption in dict.fromkeys(captions) if caption not in cache]
        if missing:
            with torch.no_grad():
                encoded = self.encode_prompts(pipe, missing, recipe)
            for i, caption in enumerate(missing):
                cache[caption] = {name: value[i].cpu() for name, value in encoded.items()}
        return {name: torch.stack([cache[caption][name] for caption in captions]).to(device) for name in cache[captions[0]]}
