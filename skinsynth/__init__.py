"""skinsynth: fully synthetic, labeled skin-disease image datasets with diffusion models.

Implements Akrout et al., "Diffusion-based Data Augmentation for Skin Disease Classification: Impact Across
Original Medical Datasets to Fully Synthetic Images" (DGM4MICCAI 2023, arXiv:2301.04802).

The Python API mirrors the CLI: `skinsynth generate` is `skinsynth.generate(...)`, and so on.
"""

__version__ = "0.1.0"

from .benchmark import benchmark
from .errors import DatasetError, OutputError, PipelineError, RecipeError, SkinsynthError
from .generate import generate
from .pipeline import load_pipeline, tiny_pipeline
from .plan import plan
from .recipe import Recipe, load_recipe, parse_recipe

__all__ = [
    "DatasetError",
    "OutputError",
    "PipelineError",
    "Recipe",
    "RecipeError",
    "SkinsynthError",
    "benchmark",
    "generate",
    "load_pipeline",
    "load_recipe",
    "parse_recipe",
    "plan",
    "tiny_pipeline",
]
