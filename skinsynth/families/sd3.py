"""Stable Diffusion 3 and 3.5: a flow-matching transformer (MMDiT) reading prompts with two CLIP encoders and a T5.

The T5 encoder is optional: `generation.drop_t5: true` loads the pipeline without it (`text_encoder_3=None`), which
saves most of the memory (about 9 GB in float16) at some cost in prompt following. `generation.max_sequence_length`
sets how many T5 tokens a prompt gets (the pipeline's default: 256). Image sides are multiples of 16 (an 8x VAE and
2x2 patches).

Training follows diffusers' `train_dreambooth_lora_sd3.py`: the rectified-flow loss with logit-normal timestep
sampling, the three encoders' prompt embeddings and pooled embedding (computed once per caption and cached), and
LoRA on the joint attention's image and text projections. Textual inversion and training from scratch are Stable
Diffusion 1.x/2.x methods here."""

from __future__ import annotations

from ..recipe import Recipe
from .base import Family


class StableDiffusion3(Family):
    name = "stable-diffusion-3"
    title = "Stable Diffusion 3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    flow_matching = True
    t5 = True
    optional_t5 = True
    size_multiple = 16
    denoiser = "transformer"
    training_methods = ("lora", "full", "dreambooth")
    large_model = True
    lora_targets = ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v")
    timestep_sampling = "logit_normal"  # the script's default `--weighting_scheme`

    def load_components(self, recipe: Recipe) -> dict:
        return {"text_encoder_3": None, "tokenizer_3": None} if recipe.generation.drop_t5 else {}

    def encode_prompts(self, pipe, captions, recipe):
        length = recipe.generation.max_sequence_length or 256  # the pipeline's default
        embeds, _, pooled, _ = pipe.encode_prompt(captions, None, None, device=pipe.transformer.device, do_classifier_free_guidance=False, max_sequence_length=length)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def training_loss(self, pipe, denoiser, noise_scheduler, batch, generator, weight_dtype, *, recipe, snr_gamma, caches):
        from ..finetune.losses import flow_matching_loss, image_latents

        latents = image_latents(pipe.vae, batch, generator, weight_dtype, caches.latents)
        prompts = self.prompt_embeddings(pipe, batch["captions"], recipe, caches.prompts, latents.device)

        def predict(noisy, timesteps):
            return denoiser(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=prompts["prompt_embeds"], pooled_projections=prompts["pooled_prompt_embeds"], return_dict=False)[0]

        return flow_matching_loss(latents, predict, noise_scheduler, generator, self.timestep_sampling)
