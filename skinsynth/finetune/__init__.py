"""Fine-tune a Stable Diffusion pipeline on a labeled real dataset with the recipe's own prompts (LoRA, full UNet,
or textual inversion with one token per class), so that `skinsynth generate` speaks the vocabulary it learned."""

from .captions import Captioner, build_captioner, class_token
from .train import FinetuneResult, Hyperparameters, finetune

__all__ = ["Captioner", "FinetuneResult", "Hyperparameters", "build_captioner", "class_token", "finetune"]
