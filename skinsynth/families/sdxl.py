"""Stable Diffusion XL: two CLIP text encoders (both read the prompt and the negative prompt) and a UNet conditioned
on the image size and crop. No refiner: the base pipeline denoises all the way (`denoising_end` stays unset)."""

from __future__ import annotations

from ..recipe import Recipe
from .base import Family


class StableDiffusionXL(Family):
    name = "stable-diffusion-xl"
    title = "Stable Diffusion XL"
    pipeline_classes = ("StableDiffusionXLPipeline",)

    def call_arguments(self, prompts, negative_prompts, guidance_scale, num_inference_steps, recipe: Recipe) -> dict:
        """The size conditioning stated, at diffusers' defaults: an uncropped image of the requested size."""
        size = (recipe.generation.height, recipe.generation.width)
        return {**super().call_arguments(prompts, negative_prompts, guidance_scale, num_inference_steps, recipe), "original_size": size, "target_size": size, "crops_coords_top_left": (0, 0)}
