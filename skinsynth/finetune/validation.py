"""The validation grid: one row per class, the same prompts and seeds at every step, so a change is the model's."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from ..recipe import Recipe
from .captions import Prompt


def validation_grid(pipe, prompts: Sequence[Sequence[Prompt]], row_labels: Sequence[str], recipe: Recipe, seed: int) -> Image.Image:
    """The grid of `shared_seed_images`, with each row's label on its left."""
    return image_grid(shared_seed_images(pipe, prompts, recipe, seed), row_labels)


def shared_seed_images(pipe, prompts: Sequence[Sequence[Prompt]], recipe: Recipe, seed: int) -> list[list[Image.Image]]:
    """Generate `prompts[i][j]` with seed `seed + j` using the recipe's generation settings (as the pipeline's
    family passes them): every row (class) starts
    column j from the same noise, so what differs down a column is what the prompt changed."""
    from ..families import family_for

    generation, family = recipe.generation, family_for(type(pipe).__name__)
    rows = []
    for row in prompts:
        arguments = family.call_arguments([p.text for p in row], [p.negative for p in row], generation.guidance_scales[0], generation.num_inference_steps, recipe)
        output = pipe(**arguments, generator=[torch.Generator("cpu").manual_seed(seed + j) for j in range(len(row))])
        rows.append(output.images)
    return rows


def image_grid(rows: list[list[Image.Image]], labels: Sequence[str]) -> Image.Image:
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = 8 + max(draw.textbbox((0, 0), label)[2] for label in labels)
    width, height = rows[0][0].size
    grid = Image.new("RGB", (margin + width * len(rows[0]), height * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (images, label) in enumerate(zip(rows, labels)):
        draw.text((4, i * height + height // 2), label, fill="black", anchor="lm")
        for j, image in enumerate(images):
            grid.paste(image, (margin + j * width, i * height))
    return grid
