"""The training loop of `skinsynth finetune`: load the pipeline, let the method set up what it trains, step the
optimizer under accelerate, checkpoint, validate. What is trained and how its loss is computed is the method's."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PipelineError, SkinsynthError
from ..families import Family
from ..recipe import Recipe
from ..shards import atomic_write_json
from .captions import class_words, validation_prompts
from .hyperparameters import Hyperparameters
from .output import TRAINER_STATE

if TYPE_CHECKING:
    from .methods import Method

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
FINAL_GRID = "sample_grid.png"  # the name the model card embeds
TRAINED_WEIGHTS = "trained.safetensors"


def _optimizer(hyper: Hyperparameters, parameters):
    import torch

    if hyper.use_8bit_adam:
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
    return torch.optim.AdamW(parameters, lr=hyper.learning_rate, weight_decay=hyper.weight_decay)


def step_generator(seed: int, micro_step: int, process_index: int):
    """The random stream of one micro-step (latent sample, noise, timesteps): same step, same draws on resume."""
    import numpy as np
    import torch

    return torch.Generator("cpu").manual_seed(int(np.random.SeedSequence([seed, micro_step, process_index]).generate_state(1)[0]))


class Trainer:
    """One fine-tuning run: the loaded models, the method, the optimizer, and where the run stands."""

    def __init__(self, accelerator, hyper: Hyperparameters, recipe: Recipe, folder: Path, pipeline_class: type, family: Family, out: Path, state: Path):
        import torch
        from accelerate.utils import set_seed
        from diffusers import DiffusionPipeline
        from diffusers.training_utils import cast_training_params

        from .methods import METHODS, Components

        self.accelerator, self.hyper, self.recipe, self.out, self.state, self.pipeline_class = accelerator, hyper, recipe, out, state, pipeline_class
        index = json.loads((folder / "model_index.json").read_text())
        extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
        try:
            # The components the recipe drops (SD3's T5 with `drop_t5`) are dropped in training too: the prompts are then
            # encoded as generation will encode them.
            pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True, **extra, **family.load_components(recipe))
        except Exception as err:
            raise PipelineError(f"could not load the pipeline in {folder}: {err}") from err
        pipe.set_progress_bar_config(disable=True)
        if recipe.generation.scheduler is not None:
            import diffusers

            from ..recipe import scheduler_class_name

            pipe.scheduler = getattr(diffusers, scheduler_class_name(recipe.generation.scheduler)).from_config(pipe.scheduler.config)
        self.noise_scheduler = family.training_scheduler(folder)
        pipe.to(accelerator.device)
        self.parts = Components(pipe, folder, family)
        options = {"lora_rank": hyper.lora_rank, "ema": hyper.ema, "snr_gamma": hyper.snr_gamma, "cache_latents": hyper.cache_latents}
        if hyper.method == "dreambooth":
            from .dreambooth import DreamBooth

            self.method: Method = DreamBooth(self.parts, recipe, adapter=hyper.dreambooth_adapter, prior_loss_weight=hyper.prior_loss_weight, **options)
        else:
            self.method = METHODS[hyper.method](self.parts, recipe, **options)
        set_seed(hyper.seed)  # LoRA's initial weights are random
        trained = self.method.setup()
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        if self.weight_dtype != torch.float32:
            for module in self.method.low_precision_modules():
                module.to(dtype=self.weight_dtype)
        cast_training_params(trained, dtype=torch.float32)
        if hyper.gradient_checkpointing:
            self.parts.denoiser.enable_gradient_checkpointing()
            if hyper.method == "textual-inversion":
                self.parts.text_encoder.gradient_checkpointing_enable()
        trained.train()
        self.optimizer = _optimizer(hyper, self.method.parameters())
        self.trained, self.optimizer = accelerator.prepare(trained, self.optimizer)
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)
        self.step = 0
        self.losses: list[float] = []

    # accelerate saves the optimizer and RNG states; the trained weights are the method's own (safetensors, small).
    def _save_hook(self, models, weights, output_dir):
        from safetensors.torch import save_file

        if self.accelerator.is_main_process:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.method.state().items()}, os.path.join(output_dir, TRAINED_WEIGHTS))
        weights.clear()

    def _load_hook(self, models, input_dir):
        from safetensors.torch import load_file

        self.method.load_state(load_file(os.path.join(input_dir, TRAINED_WEIGHTS), device=str(self.accelerator.device)), self.step)
        models.clear()

    def _forward(self, micro_step: int, batch: dict):
        generator = step_generator(self.hyper.seed, micro_step, self.accelerator.process_index)
        with self.accelerator.autocast():
            return self.method.loss(self.trained, self.noise_scheduler, batch, generator, self.weight_dtype, self.step)

    def resume(self, checkpoint: Path) -> None:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        self.step, self.losses = state["step"], list(state["losses"])
        self.accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, self.step)

    def save_checkpoint(self) -> None:
        """`checkpoint-{step}` under a temporary name, renamed when complete; only the last two are kept."""
        root = self.state
        final, tmp = root / f"checkpoint-{self.step}", root / f".checkpoint-{self.step}.tmp"
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            atomic_write_json(tmp / TRAINER_STATE, {"step": self.step, "losses": self.losses})
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old)
            logger.info("saved %s", final)
        self.accelerator.wait_for_everyone()

    def validate(self, path: Path, prompts: list[list[str]]) -> None:
        from .validation import validation_grid

        if self.accelerator.is_main_process and prompts and prompts[0]:
            self.trained.eval()
            with self.method.evaluation_weights(), self.accelerator.autocast():
                grid = validation_grid(self.parts.pipe, prompts, self.recipe.label_names, self.recipe, self.hyper.seed)
            self.trained.train()
            path.parent.mkdir(parents=True, exist_ok=True)
            grid.save(path)
        self.accelerator.wait_for_everyone()

    def train(self, rows, order, progress: bool) -> None:
        import torch
        from tqdm.auto import tqdm

        from .batches import BatchSampler, collate

        hyper, accelerator = self.hyper, self.accelerator
        accumulation = hyper.gradient_accumulation_steps
        sampler = BatchSampler(order, self.step * accumulation, hyper.max_steps * accumulation, accelerator.process_index)
        loader = torch.utils.data.DataLoader(rows, batch_sampler=sampler, collate_fn=collate, num_workers=hyper.dataloader_workers)
        prompts = validation_prompts(self.recipe, class_words(self.recipe, hyper.method), hyper.validation_images)
        bar = tqdm(total=hyper.max_steps, initial=self.step, unit="step", desc=f"fine-tuning ({hyper.method})", disable=not (progress and accelerator.is_main_process))
        window: list[float] = []
        for micro_step, batch in enumerate(loader, start=self.step * accumulation):
            with accelerator.accumulate(self.trained):
                loss = self._forward(micro_step, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.method.parameters(), hyper.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            window.append(accelerator.gather(loss.detach()[None]).mean().item())
            if not accelerator.sync_gradients:
                continue
            self.method.after_step()
            self.step += 1
            self.losses.append(sum(window) / len(window))
            window = []
            bar.update(1)
            bar.set_postfix(loss=f"{self.losses[-1]:.4f}")
            if not math.isfinite(self.losses[-1]):
                raise SkinsynthError(f"the loss became {self.losses[-1]} at step {self.step}; lower --learning-rate, or use bf16 instead of fp16")
            if self.step % hyper.checkpoint_every == 0 or self.step == hyper.max_steps:
                self.save_checkpoint()
            if hyper.validate_every and self.step % hyper.validate_every == 0 and self.step < hyper.max_steps:
                self.validate(self.out / "validation" / f"step-{self.step:06d}.png", prompts)
        bar.close()
        self.validate(self.out / FINAL_GRID, prompts)
