"""Flux (FLUX.1 dev and schnell): a flow-matching transformer reading prompts with a CLIP and a T5 encoder.

Flux is guidance-distilled: `guidance_scale` is fed to the transformer as a conditioning value (dev's default 3.5),
not used for classifier-free guidance, so one pass per step and no negative prompt (diffusers' `FluxPipeline` takes
one but ignores it unless `true_cfg_scale` > 1). FLUX.1-schnell has no guidance input at all: its recipes say
`guidance_scale: 0`, so that the dataset's `guidance_scale` column does not claim a guidance that was never used. `generation.max_sequence_length` sets the T5 tokens per prompt (the
pipeline's default: 512). Image sides are multiples of 16 (an 8x VAE and 2x2-packed latents).

Training follows diffusers' `train_dreambooth_lora_flux.py`: the rectified-flow loss with uniform timestep sampling
(its default `--weighting_scheme none`), latents packed into 2x2 patches with their position ids, the CLIP pooled
embedding and the T5 embeddings (computed once per caption and cached), and for a dev-style model the distilled
guidance input at the script's 3.5. LoRA adapts the attention and feed-forward layers of both streams. Textual
inversion and training from scratch are Stable Diffusion 1.x/2.x methods here."""

from __future__ import annotations

from ..errors import RecipeError
from ..recipe import Recipe
from .base import Family


class Flux(Family):
    name = "flux"
    title = "Flux"
    pipeline_classes = ("FluxPipeline",)
    negative_prompt = False
    flow_matching = True
    t5 = True
    size_multiple = 16
    denoiser = "transformer"
    training_methods = ("lora", "full", "dreambooth")
    large_model = True
    lora_targets = (
        "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    )
    timestep_sampling = "none"  # uniform: the script's default `--weighting_scheme`
    training_guidance = 3.5  # the script's default `--guidance_scale`

    def no_negative_prompt(self, recipe: Recipe) -> str:
        return (
            f"Flux has no negative prompt: it is guidance-distilled (`generation.guidance_scale` is its distilled guidance, not classifier-free "
            f"guidance), so `prompts.negative` ({recipe.prompts.negative!r}) would be ignored; remove `negative` from the recipe's `prompts` "
            "(or describe what you want in the templates instead)"
        )

    def check(self, recipe: Recipe, pipe=None) -> None:
        super().check(recipe, pipe)
        transformer = getattr(pipe, "transformer", None)
        guided = getattr(getattr(transformer, "config", None), "guidance_embeds", True)
        if not guided and any(recipe.generation.guidance_scales):
            raise RecipeError(
                f"this Flux model has no guidance input (a schnell-style model), so `generation.guidance_scale` "
                f"({recipe.generation.guidance_scale}) would be ignored: set `guidance_scale: 0` in the recipe"
            )

    def encode_prompts(self, pipe, captions, recipe):
        length = recipe.generation.max_sequence_length or 512  # the pipeline's default
        embeds, pooled, _ = pipe.encode_prompt(captions, None, device=pipe.transformer.device, max_sequence_length=length)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def training_loss(self, pipe, denoiser, noise_scheduler, batch, generator, weight_dtype, *, recipe, snr_gamma, caches):
        import torch
        from diffusers import FluxPipeline

        from ..finetune.losses import flow_matching_loss, image_latents

        latents = image_latents(pipe.vae, batch, generator, weight_dtype, caches.latents)
        prompts = self.prompt_embeddings(pipe, batch["captions"], recipe, caches.prompts, latents.device)
        size, (height, width) = latents.shape[:2], latents.shape[2:]
        embeds = prompts["prompt_embeds"]
        text_ids = torch.zeros(embeds.shape[1], 3, device=latents.device, dtype=embeds.dtype)
        image_ids = FluxPipeline._prepare_latent_image_ids(size[0], height // 2, width // 2, latents.device, embeds.dtype)
        guided = pipe.transformer.config.guidance_embeds
        guidance = torch.full((size[0],), self.training_guidance, device=latents.device) if guided else None
        vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)

        def predict(noisy, timesteps):
            packed = FluxPipeline._pack_latents(noisy, *size, height, width)
            prediction = denoiser(
                hidden_states=packed, timestep=timesteps / 1000, guidance=guidance, pooled_projections=prompts["pooled_prompt_embeds"],
                encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids, return_dict=False,
            )[0]
            return FluxPipeline._unpack_latents(prediction, height * vae_factor, width * vae_factor, vae_factor)

        return flow_matching_loss(latents, predict, noise_scheduler, generator, self.timestep_sampling)
