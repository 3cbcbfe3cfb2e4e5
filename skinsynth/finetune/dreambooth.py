"""DreamBooth (Ruiz et al. 2023): the method, and its prior preservation. The instance tokens themselves are
captions' (`captions.instance_token`). Prior preservation: class images the base model makes from each class's
prompts without the instance token, trained on beside the real images so that the class noun ("melanoma") keeps
what the base knew while the instance token ("sks melanoma") learns the dataset's look.

The class images are a skinsynth dataset: `generate()` makes them from `prior_recipe` (the training recipe, asking
`--prior-images` per class of one `train` split) into the training state folder (`DIR.checkpoints/prior/`), so they
are made once, a run stopped while making them resumes where it stopped, and their `generation.json` says how each
was made. Their captions are the prompts generate wrote: the recipe's templates filled with the class text alone,
the prompts of the recipe the base would otherwise generate from (diffusers' `--class_prompt`, one per class).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..recipe import Recipe, SplitSpec
from .batches import training_pixels
from .methods import METHODS, Components, Method

PRIOR_DIR = "prior"  # in the training state folder
PRIOR_SPLIT = "train"


def prior_recipe(recipe: Recipe, per_class: int) -> Recipe:
    """The recipe of the class images: the training recipe's classes, prompts and generation settings, `per_class`
    images of each class in one split."""
    return recipe.model_copy(update={
        "name": f"{recipe.name[:90]}-prior",
        "description": f"Class images for DreamBooth prior preservation: what the base model makes from the prompts of `{recipe.name}`.",
        "splits": {PRIOR_SPLIT: SplitSpec(per_class=per_class)},
    })


def _complete(folder: Path, recipe: Recipe) -> dict | None:
    """The manifest of `folder` if it holds the finished class images of `recipe`, else None."""
    from ..generate import MANIFEST

    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    same = manifest.get("identity", {}).get("recipe_sha256") == recipe.fingerprint()
    return manifest if same and manifest.get("status") == "complete" else None


def class_images(base: str, revision: str | None, recipe: Recipe, per_class: int, folder: Path, *, device: str, progress: bool = True) -> dict:
    """Make (or find already made) `per_class` class images of each recipe class with the base model in `folder`;
    return their `generation.json`. Finished images are reused without loading the model; an unfinished folder is
    resumed by `generate`, which refuses one made by another model or recipe."""
    from ..generate import generate

    wanted = prior_recipe(recipe, per_class)
    manifest = _complete(folder, wanted)
    if manifest is None:
        manifest = generate(wanted, base, folder, revision=revision, device=device, progress=progress)
    return manifest


def provenance(manifest: dict, folder: Path, out: Path, images: int, base_model: str | None) -> dict:
    """Where the class images came from, for `skinsynth_model.json`: the base that made them (`base_model`, as the
    fine-tuned model names it, with the Hub commit or the local folder's fingerprint that `generate` recorded), their recipe by hash
    and in full, and the folder they were written to (relative to the model: it is the training state, deleted once
    the run is final; the base and the recipe make the same images again)."""
    from ..paths import portable_reference

    model = manifest.get("model") or {}
    return {
        "base_model": base_model,
        "base_commit": model.get("commit"),
        "base_fingerprint": model.get("fingerprint"),
        "recipe_sha256": manifest["identity"]["recipe_sha256"],
        "recipe": manifest.get("recipe"),
        "images": images,
        "folder": portable_reference(str(folder), out),
    }


class PriorRows(torch.utils.data.Dataset):
    """The class images as training items, captioned with the prompt each was generated from (not mirrored: they
    are the base's own images, not data to augment)."""

    def __init__(self, dataset, tokenizer, resolution: int):
        self.dataset = dataset.select_columns(["image", "prompt"])
        self.tokenizer, self.resolution = tokenizer, resolution

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[index]
        input_ids = self.tokenizer(row["prompt"], max_length=self.tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt").input_ids[0]
        pixels = torch.from_numpy(training_pixels(row["image"], self.resolution, flip=False))
        return {"pixel_values": pixels, "input_ids": input_ids, "caption": row["prompt"], "image_key": (PRIOR_DIR, index)}


class WithPrior(torch.utils.data.Dataset):
    """Training items each paired with a class image, as diffusers' `DreamBoothDataset` pairs them; which one depends
    only on (seed, epoch, row), so a resumed run sees the same pairs. `collate` stacks the class images as
    `batch["prior"]`."""

    def __init__(self, rows, prior: PriorRows, seed: int = 0):
        self.rows, self.prior, self.seed = rows, prior, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        row_index, epoch = key
        pick = int(np.random.default_rng([self.seed, epoch, row_index, 2]).integers(len(self.prior)))
        return {**self.rows[key], "prior": self.prior[pick]}


class DreamBooth(Method):
    """DreamBooth (Ruiz et al. 2023) as diffusers' `train_dreambooth_lora.py` computes it: the instance loss plus
    `prior_loss_weight` x the same loss on the batch's class images. Each half is its own forward pass through the
    family's loss (diffusers concatenates them into one batch: the same objective, with separate noise draws). What
    learns, what a checkpoint keeps and how the result is saved are the adapter's (`LoRA` or `Full`)."""

    name = "dreambooth"

    def __init__(self, parts: Components, recipe: Recipe, *, adapter: str = "lora", prior_loss_weight: float = 1.0, **options):
        super().__init__(parts, recipe, **options)
        self.adapter: Method = METHODS[adapter](parts, recipe, **options)
        self.caches = self.adapter.caches
        self.prior_loss_weight = prior_loss_weight

    def setup(self):
        return self.adapter.setup()

    def low_precision_modules(self):
        return self.adapter.low_precision_modules()

    def parameters(self):
        return self.adapter.parameters()

    def state(self):
        return self.adapter.state()

    def load_state(self, tensors, step):
        self.adapter.load_state(tensors, step)

    def loss(self, trained, noise_scheduler, batch, generator, weight_dtype, step):
        loss = self.adapter.loss(trained, noise_scheduler, batch, generator, weight_dtype, step)
        if "prior" in batch and self.prior_loss_weight:
            loss = loss + self.prior_loss_weight * self.adapter.loss(trained, noise_scheduler, batch["prior"], generator, weight_dtype, step)
        return loss

    def after_step(self):
        self.adapter.after_step()

    def evaluation_weights(self):
        return self.adapter.evaluation_weights()

    def export(self, out, pipeline_class):
        from .captions import instance_token, token_recipe

        extra = self.adapter.export(out, pipeline_class)
        (out / "recipe.yaml").write_text(token_recipe(self.recipe, self.name).to_yaml(), encoding="utf-8")
        tokens = {spec.name: instance_token(i) for i, spec in enumerate(self.recipe.classes)}
        return extra | {"dreambooth": {"adapter": self.adapter.name, "instance_tokens": tokens}}
