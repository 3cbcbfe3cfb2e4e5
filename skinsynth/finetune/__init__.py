"""Fine-tune a Stable Diffusion pipeline on a labeled real dataset with the recipe's own prompts (LoRA, full UNet,
textual inversion with one token per class, or DreamBooth with one instance token per class), so that `skinsynth generate` speaks the vocabulary it learned."""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Captioner": "captions",
    "build_captioner": "captions",
    "class_token": "captions",
    "FinetuneResult": "train",
    "Hyperparameters": "hyperparameters",
    "finetune": "train",
})

__all__ = ["Captioner", "FinetuneResult", "Hyperparameters", "build_captioner", "class_token", "finetune"]
