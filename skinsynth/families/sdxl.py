"""Stable Diffusion XL: two CLIP text encoders (both read the prompt and the negative prompt) and a UNet conditioned
on the image size and crop. No refiner: the base pipeline denoises all the way (`denoising_end` stays unset).

Training follows diffusers' `train_text_to_image_lora_sdxl.py`: the diffusion objective (epsilon or v-prediction, as
the scheduler says) with both encoders' hidden states, the pooled prompt embedding and the six size-and-crop time ids.
The time ids state an uncropped image of the training resolution, which is what training images are (resized and
center-cropped to it) and what generation asks for. Textual inversion and training from scratch are Stable Diffusion
1.x/2.x methods here."""

from __future__ import annotations

from ..recipe import Recipe
from .base import Family


class StableDiffusionXL(Family):
    name = "stable-diffusion-xl"
    title = "Stable Diffusion XL"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    training_methods = ("lora", "full", "dreambooth")
    large_model = True

    def call_arguments(self, prompts, negative_prompts, guidance_scale, num_inference_steps, recipe: Recipe) -> dict:
        """The size conditioning stated, at diffusers' defaults: an uncropped image of the requested size."""
        size = (recipe.generation.height, recipe.generation.width)
        return {**super().call_arguments(prompts, negative_prompts, guidance_scale, num_inference_steps, recipe), "original_size": size, "target_size": size, "crops_coords_top_left": (0, 0)}

    def encode_prompts(self, pipe, captions, recipe):
        embeds, _, pooled, _ = pipe.encode_prompt(captions, device=pipe.unet.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def training_loss(self, pipe, denoiser, noise_scheduler, batch, generator, weight_dtype, *, recipe, snr_gamma, caches):
        import torch

        from ..finetune.losses import denoising_loss, image_latents

        latents = image_latents(pipe.vae, batch, generator, weight_dtype, caches.latents)
        prompts = self.prompt_embeddings(pipe, batch["captions"], recipe, caches.prompts, latents.device)
        side = batch["pixel_values"].shape[-1]
        time_ids = torch.tensor([[side, side, 0, 0, side, side]], device=latents.device, dtype=prompts["prompt_embeds"].dtype).repeat(latents.shape[0], 1)
        conditions = {"text_embeds": prompts["pooled_prompt_embeds"], "time_ids": time_ids}

        def predict(noisy, timesteps):
            return denoiser(noisy, timesteps, prompts["prompt_embeds"], added_cond_kwargs=conditions, return_dict=False)[0]

        return denoising_loss(latents, predict, noise_scheduler, generator, snr_gamma)
