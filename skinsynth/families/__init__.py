"""Diffusion families: one module each, saying what that family's pipelines take and which recipe settings apply.

`family_for(class_name)` finds the family of a pipeline class (the `_class_name` of its model_index.json); a class
no module claims gets the generic `Family`, which passes the settings Stable Diffusion takes, as skinsynth always has.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Family
from .flux import Flux
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL
from .stable_diffusion import StableDiffusion

FAMILIES: tuple[Family, ...] = (StableDiffusion(), StableDiffusionXL(), StableDiffusion3(), Flux())


def family_for(pipeline_class: str) -> Family:
    """The family whose pipelines include `pipeline_class` (a class name such as "FluxPipeline"); else the generic one."""
    for family in FAMILIES:
        if pipeline_class in family.pipeline_classes:
            return family
    return Family()


def family_of_folder(folder: Path) -> Family:
    """The family of the pipeline saved in `folder`, from its model_index.json (read before any weights load)."""
    try:
        class_name = json.loads((Path(folder) / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        class_name = None  # loading reports what is wrong with the folder
    return family_for(class_name if isinstance(class_name, str) else "")


__all__ = ["FAMILIES", "Family", "family_for", "family_of_folder"]
