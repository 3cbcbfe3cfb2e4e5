"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet, classifier-free guidance with a negative prompt.
Every setting of `generation` is its own; the base `Family` describes it as it is."""

from __future__ import annotations

from .base import Family


class StableDiffusion(Family):
    name = "stable-diffusion"
    title = "Stable Diffusion"
    pipeline_classes = ("StableDiffusionPipeline",)
