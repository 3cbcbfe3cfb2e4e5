"""Stable Diffusion 3 and 3.5: a flow-matching transformer (MMDiT) reading prompts with two CLIP encoders and a T5.

The T5 encoder is optional: `generation.drop_t5: true` loads the pipeline without it (`text_encoder_3=None`), which
saves most of the memory (about 9 GB in float16) at some cost in prompt following. `generation.max_sequence_length`
sets how many T5 tokens a prompt gets (the pipeline's default: 256). Image sides are multiples of 16 (an 8x VAE and
2x2 patches)."""

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

    def load_components(self, recipe: Recipe) -> dict:
        return {"text_encoder_3": None, "tokenizer_3": None} if recipe.generation.drop_t5 else {}
