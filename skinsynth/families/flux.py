"""Flux (FLUX.1 dev and schnell): a flow-matching transformer reading prompts with a CLIP and a T5 encoder.

Flux is guidance-distilled: `guidance_scale` is fed to the transformer as a conditioning value (dev's default 3.5),
not used for classifier-free guidance, so one pass per step and no negative prompt (diffusers' `FluxPipeline` takes
one but ignores it unless `true_cfg_scale` > 1). FLUX.1-schnell has no guidance input at all: its recipes say
`guidance_scale: 0`, so that the dataset's `guidance_scale` column does not claim a guidance that was never used. `generation.max_sequence_length` sets the T5 tokens per prompt (the
pipeline's default: 512). Image sides are multiples of 16 (an 8x VAE and 2x2-packed latents)."""

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
