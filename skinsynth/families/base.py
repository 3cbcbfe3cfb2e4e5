"""What every diffusion family shares: how a recipe's generation settings become a pipeline call, and which settings
a family has. A family module overrides only where its pipeline differs."""

from __future__ import annotations

from ..errors import RecipeError
from ..recipe import Recipe


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

    def check(self, recipe: Recipe, pipe=None) -> None:
        """Refuse a setting this family does not have. `pipe`, once loaded, lets a family check what only its
        weights' configs say (Flux schnell has no guidance)."""
        generation = recipe.generation
        if recipe.prompts.negative and not self.negative_prompt:
            raise RecipeError(self.no_negative_prompt(recipe))
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
