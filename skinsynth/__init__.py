"""skinsynth: fully synthetic, labeled skin-disease image datasets with diffusion models.

Implements Akrout et al., "Diffusion-based Data Augmentation for Skin Disease Classification: Impact Across
Original Medical Datasets to Fully Synthetic Images" (DGM4MICCAI 2023, arXiv:2301.04802).

The Python API mirrors the CLI: `skinsynth generate` is `skinsynth.generate(...)`, and so on.
"""

__version__ = "0.1.0"

import sys
import types

from ._lazy import lazy_exports

# Public name -> the module that defines it. Imported on first use, so that `skinsynth --help` and a refused
# recipe or option answer before torch, diffusers, transformers and datasets load (seconds).
_EXPORTS = {
    "FilterConfig": "audit.filter",
    "filter_dataset": "audit.filter",
    "audit_fidelity": "audit.fidelity",
    "audit_memorization": "audit.memorization",
    "audit_quality": "audit.quality",
    "benchmark": "benchmark",
    "write_dataset_card": "card",
    "write_model_card": "card",
    "DatasetError": "errors",
    "HubError": "errors",
    "OutputError": "errors",
    "PipelineError": "errors",
    "RecipeError": "errors",
    "SkinsynthError": "errors",
    "finetune": "finetune",
    "generate": "generate",
    "push_to_hub": "hub",
    "load_pipeline": "pipeline",
    "tiny_pipeline": "tiny",
    "plan": "plan",
    "PrepareConfig": "prepare",
    "prepare": "prepare",
    "Recipe": "recipe",
    "load_recipe": "recipe",
    "parse_recipe": "recipe",
    "recipe_from": "recipe_from",
    "verify_dataset": "verify",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _Package(types.ModuleType):
    """`skinsynth.generate` is the function even after the submodule of the same name is imported (the import
    system would otherwise set the attribute to the submodule)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in _EXPORTS:
            return
        super().__setattr__(name, value)


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
    "audit_fidelity",
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

sys.modules[__name__].__class__ = _Package
