"""`skinsynth finetune`: adapt a diffusion pipeline (SD 1.x/2.x, SDXL, SD3, Flux) to a labeled real dataset,
captioned with a recipe.

Everything that can be wrong with the inputs (options, recipe, base model and the methods its family takes, dataset,
captions, output folder) is checked before a weight loads. Training is diffusers' own recipe for the family (its
module in `skinsynth/families/` says which: noise or v-prediction, or rectified flow) under accelerate, so
`accelerate launch -m skinsynth finetune …` runs it on several GPUs.

Output folder::

    DIR/
      skinsynth_model.json        base model, method, training data and its license, steps, final loss (base and
                                  data by Hub id, or by a path relative to DIR: nothing names this machine's folders)
      finetune_config.json        the resolved configuration (what `--resume` must match)
      sample_grid.png             the final validation grid (one row per class; the model card shows it);
                                  validation/step-*.png: the grids written during training
      pytorch_lora_weights.safetensors | model_index.json + unet/ … | learned_embeds-*.safetensors + recipe.yaml

Training state folder (`--checkpoint-dir`, by default `DIR.checkpoints` beside DIR)::

    DIR.checkpoints/
      lock                        held by the run writing DIR
      checkpoint-{step}/          the last two checkpoints (`--resume` continues from the latest)
      init/                       `--method scratch`: the random-weight pipeline the run started from
      prior/                      `--method dreambooth`: the base's class images (a `skinsynth generate` dataset)

The training state lives outside DIR because accelerate pickles it (`optimizer.bin`, `random_states_0.pkl`):
`hf upload DIR`, `push_to_hub` or a copy of DIR then carries the model and its card, and no pickle. Older
versions kept it in `DIR/.skinsynth/`; `--resume` moves it to the state folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data import label_names, open_dataset
from ..errors import DatasetError, PipelineError, SkinsynthError
from ..families import Family, family_of_folder
from ..families.stable_diffusion import StableDiffusion
from ..paths import portable_reference
from ..card import write_model_card
from ..pipeline import MODEL_METADATA_FILE, check_text_to_image, resolve_model
from ..recipe import Recipe, load_recipe
from ..shards import atomic_write_json, read_manifest
from .captions import build_captioner
from .hyperparameters import DEFAULT_CAPTION_DROPOUT, DEFAULT_CLASS_DROPOUT, DEFAULT_LEARNING_RATES, DEFAULT_SNR_GAMMA, RESUMABLE_CHANGES, Hyperparameters, eight_bit_adam_available, fill_method_defaults, parse_hyperparameters
from .output import CONFIG_FILE, INIT_DIR, check_output, default_checkpoint_dir, lock_output
from .trainer import Trainer

logger = logging.getLogger(__name__)

FINAL_LOSS_WINDOW = 10
SD_COMPONENTS = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}


@dataclass
class FinetuneResult:
    out: Path
    metadata: dict  # the content of skinsynth_model.json
    losses: list[float] = field(default_factory=list)  # one per optimizer step, from step 1 (resumed runs included)


# --- checks before anything loads -----------------------------------------------------------------------------


def resolve_base(base: str, revision: str | None, hyper: Hyperparameters) -> tuple[Path, str | None, type, Family]:
    """The base pipeline's folder, Hub commit, class and family, after checking that `skinsynth finetune` trains
    that family with `hyper.method`: Stable Diffusion 1.x/2.x (a pipeline of its components: one UNet2DConditionModel,
    one CLIP text encoder, a VAE), SDXL, SD3 and Flux."""
    folder, commit = resolve_model(base, revision)
    pipeline_class = check_text_to_image(folder)
    family = family_of_folder(folder)
    if family.name in ("stable-diffusion", Family.name):
        index = json.loads((folder / "model_index.json").read_text())
        components = {name for name, value in index.items() if not name.startswith("_") and isinstance(value, list) and value[0] is not None}
        if not SD_COMPONENTS <= components or "text_encoder_2" in components or index["unet"][1] != "UNet2DConditionModel":
            raise PipelineError(
                f"`{base}` is a {index.get('_class_name')}; `skinsynth finetune` trains Stable Diffusion 1.x/2.x-style pipelines "
                "(a UNet2DConditionModel, one CLIP text encoder, a VAE), SDXL, SD3 and Flux, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5"
            )
    family.check_training(hyper.method, hyper.snr_gamma)
    return folder, commit, pipeline_class, family


def data_terms(data: str, revision: str | None) -> tuple[str | None, str | None]:
    """(license, citation) of the training data: from a local folder's skinsynth manifest, or a Hub dataset's card."""
    local = Path(data).expanduser()
    if local.is_dir():
        try:
            name, manifest = read_manifest(local)
        except DatasetError:
            return None, None
        if name == "generation.json":
            return manifest.get("recipe", {}).get("license"), None
        source = manifest.get("source") or {}
        return manifest.get("license") or source.get("license"), manifest.get("citation") or source.get("citation")
    from huggingface_hub import DatasetCard

    try:
        return DatasetCard.load(data, revision=revision).data.get("license"), None
    except Exception as err:  # offline, gated, no card: the model card then says "unknown"
        logger.warning("could not read the license of `%s` from its dataset card: %s", data, err)
        return None, None



# --- training -------------------------------------------------------------------------------------------------


def _accelerator(hyper: Hyperparameters, state: Path):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    try:
        return Accelerator(
            mixed_precision=hyper.mixed_precision,
            gradient_accumulation_steps=hyper.gradient_accumulation_steps,
            project_config=ProjectConfiguration(project_dir=str(state), logging_dir=str(state / "logs")),
        )
    except ValueError as err:
        raise SkinsynthError(f"`--mixed-precision {hyper.mixed_precision}` cannot be used here: {err}") from None



# --- the public function ----------------------------------------------------------------------------------------


def finetune(
    base: str | None,
    data: str | Path,
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    method: str = "lora",
    revision: str | None = None,
    data_revision: str | None = None,
    resume: bool = False,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    max_steps: int = 1000,
    batch_size: int = 4,
    gradient_accumulation_steps: int = 1,
    learning_rate: float | None = None,
    resolution: int | None = None,
    checkpoint_every: int = 500,
    validate_every: int = 500,
    validation_images: int = 4,
    seed: int = 0,
    gradient_checkpointing: bool | None = None,
    mixed_precision: str = "no",
    use_8bit_adam: bool | None = None,
    cache_latents: bool = False,
    ema: bool = False,
    dreambooth_adapter: str | None = None,
    prior_images: int | None = None,
    prior_loss_weight: float | None = None,
    caption_dropout: float | None = None,
    class_dropout: float | None = None,
    snr_gamma: float | None = None,
    class_balance: float = 0.0,
    size: str | None = None,
    config: str | Path | None = None,
    lora_rank: int = 4,
    weight_decay: float = 1e-2,
    max_grad_norm: float = 1.0,
    dataloader_workers: int = 0,
) -> FinetuneResult:
    """Fine-tune the Stable Diffusion pipeline `base` on the `train` split of `data`, captioned with `recipe`,
    into `out` (see the module docstring for its layout). Mirrors `skinsynth finetune`.

    `method`: `lora` (default learning rate 1e-4), `full` (1e-5, `ema` optional), `textual-inversion` (5e-4,
    one new token per class), `dreambooth` (`dreambooth_adapter` `lora`, the default, or `full`, at its learning rate;
    one instance token per class, and with prior preservation: `prior_images` class images per class, default 100,
    made by the base from the recipe's prompts into `checkpoint_dir/prior/`, their loss weighted by
    `prior_loss_weight`, default 1; 0 images trains without them; see `dreambooth.py`) or `scratch` (5e-4; no `base`: a whole pipeline of the architecture `size`, overridden
    by the file `config`, is trained from random weights, see `scratch.py`). `resolution` defaults to the base's
    own (the preset's for scratch). Checkpoints (and the lock) go to `checkpoint_dir`, by default `out` + `.checkpoints`
    beside `out`. With `resume`, continues the run in `out` from the latest checkpoint there (same data order, same
    random draws), possibly to a larger `max_steps`. `class_balance` (0 to 1) draws rows with
    probability count(class) ** -class_balance: 1 shows every class equally often. `gradient_checkpointing` and
    `use_8bit_adam` left as None are on for SDXL, SD3 and Flux (8-bit Adam where bitsandbytes and CUDA are there).
    `class_dropout` leaves the class out of that share of captions (default 0.1 for scratch, else 0; a recipe's
    `class_free_negative` guides against that caption). `cache_latents` encodes each training image (and its mirror image) with the VAE once and keeps its latent
    distribution in memory.
    """
    options = {k: v for k, v in locals().items() if k in Hyperparameters.model_fields}
    options["config"] = None if config is None else str(config)
    hyper = fill_method_defaults(parse_hyperparameters(options))
    scratch = hyper.method == "scratch"
    if scratch and base is not None:
        raise SkinsynthError("`--base`: `--method scratch` trains every weight from random initialisation; leave --base out, or choose another --method")
    if not scratch and base is None:
        raise SkinsynthError(f"`--base` is required with `--method {hyper.method}`: the pipeline to fine-tune (or use `--method scratch`)")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    architecture = None
    if scratch:
        from diffusers import StableDiffusionPipeline

        from .scratch import check_resolution, load_architecture

        architecture = load_architecture(hyper.size, hyper.config)
        check_resolution(architecture, hyper.resolution or architecture.resolution)
        commit, pipeline_class, family, base_resolution = None, StableDiffusionPipeline, StableDiffusion(), architecture.resolution
    else:
        folder, commit, pipeline_class, family = resolve_base(base, revision, hyper)
        base_resolution = family.native_resolution(folder)
    resolution = hyper.resolution or base_resolution
    if resolution % family.size_multiple:
        raise SkinsynthError(f"`--resolution {resolution}`: {family.title} takes image sides that are multiples of {family.size_multiple}; use {resolution - resolution % family.size_multiple or family.size_multiple} or {resolution - resolution % family.size_multiple + family.size_multiple}")
    family.check(recipe)  # the validation grids generate with the recipe's settings
    dataset = open_dataset(data, revision=data_revision, required_splits=("train",))
    train_split = dataset["train"]
    train_labels = list(train_split["label"])
    if scratch and len(set(train_labels)) < 2:
        raise DatasetError(f"the train split of `{data}` has a single class; a model trained from scratch learns classes from their differences: give it at least two")
    dropout = hyper.caption_dropout if hyper.caption_dropout is not None else DEFAULT_CAPTION_DROPOUT.get(hyper.method, 0.0)
    class_dropout = hyper.class_dropout if hyper.class_dropout is not None else DEFAULT_CLASS_DROPOUT.get(hyper.method, 0.0)
    captioner = build_captioner(recipe, label_names(dataset), train_split.column_names, method=hyper.method, dropout=dropout,
                                 class_dropout=class_dropout, seed=hyper.seed)
    hyper = hyper.model_copy(update={
        "learning_rate": hyper.learning_rate or DEFAULT_LEARNING_RATES[hyper.dreambooth_adapter or hyper.method],  # DreamBooth: its adapter's
        "resolution": resolution,
        "gradient_checkpointing": family.large_model if hyper.gradient_checkpointing is None else hyper.gradient_checkpointing,
        "use_8bit_adam": family.large_model and eight_bit_adam_available() if hyper.use_8bit_adam is None else hyper.use_8bit_adam,
        "caption_dropout": dropout,
        "class_dropout": class_dropout,
        "snr_gamma": hyper.snr_gamma if hyper.snr_gamma is not None else DEFAULT_SNR_GAMMA.get(hyper.method, 0.0),
    })
    out = Path(out)
    state = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out)
    # The run's files name its inputs by Hub id, or by a path relative to `out`: never this machine's absolute paths.
    base_reference, data_reference = portable_reference(base, out), portable_reference(data, out)
    hyper = hyper.model_copy(update={"config": portable_reference(hyper.config, out)})
    identity = {
        "base_model": base_reference, "base_revision": revision, "base_commit": commit, "training_data": data_reference, "data_revision": data_revision,
        "recipe_sha256": recipe.fingerprint(), "num_train_rows": len(train_split),
        "hyperparameters": {k: v for k, v in hyper.recorded().items() if k not in RESUMABLE_CHANGES},
    }
    if architecture is not None:
        identity["architecture"] = architecture.model_dump(mode="json")
    check_output(out, state, identity, resume)  # refuse before anything loads; checked again under the lock

    from .batches import BatchOrder, TrainingRows

    accelerator = _accelerator(hyper, state)
    order = BatchOrder.balanced(train_labels, hyper.batch_size, accelerator.num_processes, hyper.seed, hyper.class_balance)
    if scratch and accelerator.num_processes > 1:
        raise SkinsynthError("`--method scratch` trains on one process; run it without `accelerate launch`")
    if scratch and hyper.max_steps <= architecture.autoencoder_steps:
        raise SkinsynthError(f"`--max-steps {hyper.max_steps}` leaves no step for the UNet: the first {architecture.autoencoder_steps} train the autoencoder (`autoencoder_steps` of `--size {hyper.size or 'cpu-small'}`); raise --max-steps")
    if order.batches_per_epoch == 0:
        raise DatasetError(f"the train split has {len(train_split)} rows, fewer than one batch ({hyper.batch_size} x {accelerator.num_processes} processes); lower --batch-size")
    lock, checkpoint = lock_output(accelerator, out, state, identity, resume)
    try:
        if checkpoint is not None:
            reached = int(checkpoint.name.split("-")[1])
            if reached > hyper.max_steps:
                raise SkinsynthError(f"the run in `{out}` is at step {reached}, past `--max-steps {hyper.max_steps}`; pass a larger --max-steps")
        if accelerator.is_main_process:
            from ..versions import library_versions

            out.mkdir(parents=True, exist_ok=True)
            run_config = {"identity": identity, "recipe": recipe.to_dict(), "hyperparameters": hyper.recorded(), "num_processes": accelerator.num_processes, "library_versions": library_versions()}
            atomic_write_json(out / CONFIG_FILE, run_config)
            if scratch and not (state / INIT_DIR).is_dir():
                from .scratch import build_pipeline

                build_pipeline(state / INIT_DIR, architecture, recipe, hyper.resolution, hyper.seed)
        accelerator.wait_for_everyone()
        if scratch:
            folder = state / INIT_DIR
        prior = None
        if hyper.method == "dreambooth" and hyper.prior_images:  # made before the trained pipeline loads: one model in memory at a time
            from .dreambooth import PRIOR_DIR, class_images

            prior = class_images(base, revision, recipe, hyper.prior_images, state / PRIOR_DIR, device=str(accelerator.device), progress=progress)

        trainer = Trainer(accelerator, hyper, recipe, folder, pipeline_class, family, out, state)
        rows = TrainingRows(train_split, captioner, trainer.parts.tokenizer, hyper.resolution, seed=hyper.seed)
        if prior is not None:
            from .dreambooth import PRIOR_SPLIT, PriorRows, WithPrior

            prior_rows = PriorRows(open_dataset(state / PRIOR_DIR, required_splits=(PRIOR_SPLIT,))[PRIOR_SPLIT], trainer.parts.tokenizer, hyper.resolution)
            rows = WithPrior(rows, prior_rows, seed=hyper.seed)
        if checkpoint is not None:
            trainer.resume(checkpoint)
        started = time.perf_counter()
        trainer.train(rows, order, progress)
        seconds = time.perf_counter() - started

        metadata = None
        if accelerator.is_main_process:
            extra = trainer.method.export(out, pipeline_class)
            training_license, citation = data_terms(str(data), data_revision)
            recent = trainer.losses[-FINAL_LOSS_WINDOW:]
            metadata = {
                "base_model": base_reference,
                "base_revision": commit or revision,
                "method": hyper.method,
                "family": family.name,  # the model card's tag, e.g. stable-diffusion-xl or flux
                "training_data": data_reference,
                "training_license": training_license,
                "training_citation": citation,
                "steps": trainer.step,
                "hyperparameters": hyper.recorded(),
                "final_loss": round(sum(recent) / len(recent), 6) if recent else None,
                **extra,
            }
            if prior is not None:
                from .dreambooth import provenance

                metadata["dreambooth"]["prior"] = provenance(prior, state / PRIOR_DIR, out, len(prior_rows), base_reference)
            if architecture is not None:
                first_stage = trainer.losses[: architecture.autoencoder_steps][-FINAL_LOSS_WINDOW:]
                metadata["autoencoder_final_loss"] = round(sum(first_stage) / len(first_stage), 6) if first_stage else None
            atomic_write_json(out / MODEL_METADATA_FILE, metadata)
            write_model_card(out)
            logger.info("%s for %d steps in %.1f s; wrote %s", f"fine-tuned {base}" if base else "trained from scratch", trainer.step, seconds, out)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    finally:
        if lock is not None:
            lock.release()
    return FinetuneResult(out, metadata or json.loads((out / MODEL_METADATA_FILE).read_text()), trainer.losses)
