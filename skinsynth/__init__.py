"""skinsynth: fully synthetic, labeled skin-disease image datasets with diffusion models.

Implements Akrout et al., "Diffusion-based Data Augmentation for Skin Disease Classification: Impact Across
Original Medical Datasets to Fully Synthetic Images" (DGM4MICCAI 2023, arXiv:2301.04802).

The Python API mirrors the CLI: `skinsynth generate` is `skinsynth.generate(...)`, and so on.
"""

__version__ = "0.1.0"

from .audit.filter import FilterConfig, filter_dataset
from .audit.memorization import audit_memorization
from .audit.quality import audit_quality
from .benchmark import benchmark
from .card import write_dataset_card, write_model_card
from .errors import DatasetError, HubError, OutputError, PipelineError, RecipeError, SkinsynthError
from .finetune import finetune
from .generate import generate
from .hub import push_to_hub
from .pipeline import load_pipeline, tiny_pipeline
from .plan import plan
from .prepare import PrepareConfig, prepare
from .recipe import Recipe, load_recipe, parse_recipe
from .recipe_from import recipe_from
from .verify import verify_dataset

__all__ = [
    "DatasetError",
    "FilterConfig",
    "HubError",
    "OutputError",
    "PipelineError",
    "PrepareConfig",
    "Recipe",
    "RecipeError",
    "SkinsynthError",
    "audit_memorization",
    "audit_quality",
    "benchmark",
    "filter_dataset",
    "finetune",
    "generate",
    "load_pipeline",
    "load_recipe",
    "parse_recipe",
    "plan",
    "prepare",
    "push_to_hub",
    "recipe_from",
    "tiny_pipeline",
    "verify_dataset",
    "write_dataset_card",
    "write_model_card",
]
