"""`skinsynth finetune`: adapt a Stable Diffusion pipeline to a labeled real dataset, captioned with a recipe.

Everything that can be wrong with the inputs (options, recipe, base model, dataset, captions, output folder) is
checked before a weight loads. Training is diffusers' own recipe (noise-prediction MSE, or v-prediction when the
scheduler says so) under accelerate, so `accelerate launch -m skinsynth finetune …` runs it on several GPUs.

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

The training state lives outside DIR because accelerate pickles it (`optimizer.bin`, `random_states_0.pkl`):
`hf upload DIR`, `push_to_hub` or a copy of DIR then carries the model and its card, and no pickle. Older
versions kept it in `DIR/.skinsynth/`; `--resume` moves it to the state folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..data import label_names, open_dataset
from ..errors import DatasetError, OutputError, PipelineError, SkinsynthError
from ..paths import portable_reference
from ..card import write_model_card
from ..pipeline import MODEL_METADATA_FILE, check_text_to_image, resolve_model
from ..recipe import Recipe, load_recipe
from ..shards import atomic_write_json, read_manifest
from .captions import build_captioner, class_words, validation_prompts

if TYPE_CHECKING:
    from .methods import Method

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
STATE_SUFFIX = ".checkpoints"  # the default training state folder: DIR.checkpoints beside DIR
LOCK_FILE = "lock"
LEGACY_STATE_DIR = ".skinsynth"  # where versions before issue 21 kept the lock, checkpoints/ and init/ inside DIR
KEEP_CHECKPOINTS = 2
TRAINER_STATE = "trainer_state.json"
FINAL_GRID = "sample_grid.png"  # the name the model card embeds
TRAINED_WEIGHTS = "trained.safetensors"
FINAL_LOSS_WINDOW = 10
SD_COMPONENTS = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
# Options that may change when a run is resumed (train longer, checkpoint or validate more often).
DEFAULT_LEARNING_RATES = {"lora": 1e-4, "full": 1e-5, "textual-inversion": 5e-4, "scratch": 5e-4}  # as in diffusers' example scripts
# Training from scratch drops some captions by default: classifier-free guidance needs an unconditional model.
DEFAULT_CAPTION_DROPOUT = {"scratch": 0.1}
# Min-SNR-gamma loss weighting (Hang et al. 2023) for training from scratch: the easy, low-noise steps stop
# dominating the loss, so the model spends its capacity where the layout (and the class) is decided.
DEFAULT_SNR_GAMMA = {"scratch": 5.0}
INIT_DIR = "init"  # in the state folder: the random-weight pipeline a scratch run starts from
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "validate_every", "validation_images", "dataloader_workers"}


class Hyperparameters(BaseModel):
    """The training options, validated before anything loads; `None` means "the method's or model's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lora", "full", "textual-inversion", "scratch"] = "lora"
    size: str | None = None  # scratch only: the architecture preset
    config: str | None = None  # scratch only: a file of architecture fields over the preset
    max_steps: Annotated[int, Field(ge=1)] = 1000
    batch_size: Annotated[int, Field(ge=1)] = 4
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] = 1
    learning_rate: Annotated[float, Field(gt=0)] | None = None
    resolution: Annotated[int, Field(ge=8, multiple_of=8)] | None = None
    checkpoint_every: Annotated[int, Field(ge=1)] = 500
    validate_every: Annotated[int, Field(ge=0)] = 500
    validation_images: Annotated[int, Field(ge=0)] = 4
    seed: Annotated[int, Field(ge=0)] = 0
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    use_8bit_adam: bool = False
    ema: bool = False
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    snr_gamma: Annotated[float, Field(ge=0)] | None = None  # 0: plain MSE
    class_balance: Annotated[float, Field(ge=0, le=1)] = 0.0
    lora_rank: Annotated[int, Field(ge=1)] = 4
    weight_decay: Annotated[float, Field(ge=0)] = 1e-2
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    dataloader_workers: Annotated[int, Field(ge=0)] = 0


@dataclass
class FinetuneResult:
    out: Path
    metadata: dict  # the content of skinsynth_model.json
    losses: list[float] = field(default_factory=list)  # one per optimizer step, from step 1 (resumed runs included)


# --- checks before anything loads -----------------------------------------------------------------------------


def _hyperparameters(options: dict) -> Hyperparameters:
    try:
        hyper = Hyperparameters(**options)
    except ValidationError as err:
        first = err.errors()[0]
        name = "--" + str(first["loc"][0]).replace("_", "-")
        raise SkinsynthError(f"`{name}`: {first['msg']} (got {first.get('input')!r})") from None
    if hyper.ema and hyper.method not in ("full", "scratch"):
        raise SkinsynthError("`--ema` keeps an average of the UNet's weights: it applies to `--method full` and `--method scratch` only")
    for option in ("size", "config"):
        if getattr(hyper, option) is not None and hyper.method != "scratch":
            raise SkinsynthError(f"`--{option}` sets the architecture of a model trained from scratch: it applies to `--method scratch` only")
    if hyper.use_8bit_adam:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise SkinsynthError("`--use-8bit-adam` needs bitsandbytes (`pip install bitsandbytes`, CUDA only); or leave the option out") from None
    return hyper


def resolve_base(base: str, revision: str | None) -> tuple[Path, str | None, type]:
    """The base pipeline's folder, Hub commit and class, after checking it is a Stable Diffusion-style
    text-to-image pipeline (one UNet2DConditionModel, one CLIP text encoder, a VAE) that can be trained here."""
    folder, commit = resolve_model(base, revision)
    pipeline_class = check_text_to_image(folder)
    index = json.loads((folder / "model_index.json").read_text())
    components = {name for name, value in index.items() if not name.startswith("_") and isinstance(value, list) and value[0] is not None}
    if not SD_COMPONENTS <= components or "text_encoder_2" in components or index["unet"][1] != "UNet2DConditionModel":
        raise PipelineError(
            f"`{base}` is a {index.get('_class_name')}; `skinsynth finetune` trains Stable Diffusion 1.x/2.x-style pipelines "
            "(a UNet2DConditionModel, one CLIP text encoder, a VAE), e.g. stable-diffusion-v1-5/stable-diffusion-v1-5"
        )
    return folder, commit, pipeline_class


def native_resolution(folder: Path) -> int:
    """The image size the base was trained at: UNet sample size times the VAE's downscaling factor."""
    unet = json.loads((folder / "unet" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


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


def default_checkpoint_dir(out: Path) -> Path:
    """`DIR.checkpoints` beside the output folder `DIR`: found again by `--resume` without being told, and outside
    what an upload of DIR sends."""
    out = Path(os.path.abspath(out))
    return out.with_name(out.name + STATE_SUFFIX)


def _check_output(out: Path, state: Path, identity: dict, resume: bool) -> None:
    """Check that `out` is empty, or holds this same run when resuming. A new run also needs a state folder without
    another run's checkpoints (they would be resumed later)."""
    config_path = out / CONFIG_FILE
    if config_path.is_file():
        if not resume:
            raise OutputError(f"`{out}` holds a fine-tuning run already; pass --resume to continue it, or choose another --out")
        previous = _relative_paths(json.loads(config_path.read_text(encoding="utf-8")).get("identity", {}), out)
        for key in sorted(set(previous) | set(identity)):
            if previous.get(key) != identity.get(key):
                raise OutputError(f"`{out}` holds a run with another {key} ({previous.get(key)!r}, now {identity.get(key)!r}); resume it with the same options, or choose another --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"`{out}` exists and is not an empty folder; choose a new --out")
    if state.exists() and (not state.is_dir() or any(entry.name != LOCK_FILE for entry in state.iterdir())):
        raise OutputError(f"`--checkpoint-dir {state}` holds the training state of another run; delete it, or choose another --checkpoint-dir")


def _relative_paths(identity: dict, out: Path) -> dict:
    """A run's identity as older versions recorded it (absolute paths of the base, the data and the architecture
    config) in today's terms, relative to `out`, so that their runs still resume."""
    def relative(value):
        return portable_reference(value, out) if isinstance(value, str) and os.path.isabs(value) else value

    hyperparameters = identity.get("hyperparameters") or {}
    return {**identity, "base_model": relative(identity.get("base_model")), "training_data": relative(identity.get("training_data")),
            "hyperparameters": {**hyperparameters, "config": relative(hyperparameters.get("config"))} if hyperparameters else hyperparameters}


def _adopt_legacy_state(out: Path, state: Path) -> None:
    """Move the checkpoints and scratch init that older versions kept in `out/.skinsynth/` into `state`, so the run
    resumes from them and `out` no longer holds pickles."""
    legacy = out / LEGACY_STATE_DIR
    if not legacy.is_dir():
        return
    for entry in [*(legacy / "checkpoints").glob("checkpoint-*"), legacy / INIT_DIR]:
        if entry.is_dir() and not (state / entry.name).exists():
            shutil.move(str(entry), str(state / entry.name))
    shutil.rmtree(legacy)
    logger.warning("moved the training state of `%s` from %s to %s", out, legacy, state)


def _lock_output(accelerator, out: Path, state: Path, identity: dict, resume: bool) -> tuple[object, Path | None]:
    """Hold the run's lock (`state/lock`, main process) for the whole run, then check `out` and choose the checkpoint
    to resume from under it: a second run into the same folder is refused with exit code 2 on every process, even
    one that started after the first had checked, and a resume never starts from a checkpoint another run has since
    moved past. Returns the lock (None on other processes) and the checkpoint (the same on every process)."""
    lock, refusal, checkpoint, created = None, None, None, not state.exists()
    if accelerator.is_main_process:
        from filelock import FileLock, Timeout

        try:
            state.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(state / LOCK_FILE))
            lock.acquire(timeout=0)
            _check_output(out, state, identity, resume)
            if resume:
                _adopt_legacy_state(out, state)
            checkpoint = latest_checkpoint(state)
            if resume and checkpoint is None and (out / CONFIG_FILE).is_file():
                logger.warning("no checkpoint of `%s` in %s: it starts again from step 0 (if the run used another --checkpoint-dir, pass it again)", out, state)
        except Timeout:
            lock, refusal = None, f"another `skinsynth finetune` is writing to `{out}`; wait for it or choose another --out"
        except OSError as err:
            refusal = f"cannot create `{state}`: {err.strerror or err}"
        except OutputError as err:
            refusal = str(err)
        if refusal is not None and lock is not None:
            lock.release()
            lock = None
            if created:  # a refused start leaves no trace
                shutil.rmtree(state, ignore_errors=True)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refusal, checkpoint = broadcast_object_list([refusal, checkpoint])
    if refusal is not None:
        raise OutputError(refusal)
    return lock, checkpoint


def latest_checkpoint(state: Path) -> Path | None:
    checkpoints = sorted(state.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in checkpoints if (p / TRAINER_STATE).is_file()]
    return complete[-1] if complete else None


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

    def __init__(self, accelerator, hyper: Hyperparameters, recipe: Recipe, folder: Path, pipeline_class: type, out: Path, state: Path):
        import torch
        from accelerate.utils import set_seed
        from diffusers import DDPMScheduler, DiffusionPipeline
        from diffusers.training_utils import cast_training_params

        from .methods import METHODS, Components

        self.accelerator, self.hyper, self.recipe, self.out, self.state, self.pipeline_class = accelerator, hyper, recipe, out, state, pipeline_class
        index = json.loads((folder / "model_index.json").read_text())
        extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
        try:
            pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True, **extra)
        except Exception as err:
            raise PipelineError(f"could not load the pipeline in {folder}: {err}") from err
        pipe.set_progress_bar_config(disable=True)
        if recipe.generation.scheduler is not None:
            import diffusers

            from ..recipe import scheduler_class_name

            pipe.scheduler = getattr(diffusers, scheduler_class_name(recipe.generation.scheduler)).from_config(pipe.scheduler.config)
        self.noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        pipe.to(accelerator.device)
        self.parts = Components(pipe, folder)
        self.method: Method = METHODS[hyper.method](self.parts, recipe, lora_rank=hyper.lora_rank, ema=hyper.ema, snr_gamma=hyper.snr_gamma)
        set_seed(hyper.seed)  # LoRA's initial weights are random
        trained = self.method.setup()
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        if self.weight_dtype != torch.float32:
            for module in self.method.low_precision_modules():
                module.to(dtype=self.weight_dtype)
        cast_training_params(trained, dtype=torch.float32)
        if hyper.gradient_checkpointing:
            self.parts.unet.enable_gradient_checkpointing()
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
    gradient_checkpointing: bool = False,
    mixed_precision: str = "no",
    use_8bit_adam: bool = False,
    ema: bool = False,
    caption_dropout: float | None = None,
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
    one new token per class) or `scratch` (5e-4; no `base`: a whole pipeline of the architecture `size`, overridden
    by the file `config`, is trained from random weights, see `scratch.py`). `resolution` defaults to the base's
    own (the preset's for scratch). Checkpoints (and the lock) go to `checkpoint_dir`, by default `out` + `.checkpoints`
    beside `out`. With `resume`, continues the run in `out` from the latest checkpoint there (same data order, same
    random draws), possibly to a larger `max_steps`. `class_balance` (0 to 1) draws rows with
    probability count(class) ** -class_balance: 1 shows every class equally often.
    """
    options = {k: v for k, v in locals().items() if k in Hyperparameters.model_fields}
    options["config"] = None if config is None else str(config)
    hyper = _hyperparameters(options)
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
        commit, pipeline_class, base_resolution = None, StableDiffusionPipeline, architecture.resolution
    else:
        folder, commit, pipeline_class = resolve_base(base, revision)
        base_resolution = native_resolution(folder)
    dataset = open_dataset(data, revision=data_revision, required_splits=("train",))
    train_split = dataset["train"]
    train_labels = list(train_split["label"])
    if scratch and len(set(train_labels)) < 2:
        raise DatasetError(f"the train split of `{data}` has a single class; a model trained from scratch learns classes from their differences: give it at least two")
    dropout = hyper.caption_dropout if hyper.caption_dropout is not None else DEFAULT_CAPTION_DROPOUT.get(hyper.method, 0.0)
    captioner = build_captioner(recipe, label_names(dataset), train_split.column_names, method=hyper.method, dropout=dropout, seed=hyper.seed)
    hyper = hyper.model_copy(update={
        "learning_rate": hyper.learning_rate or DEFAULT_LEARNING_RATES[hyper.method],
        "resolution": hyper.resolution or base_resolution,
        "caption_dropout": dropout,
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
        "hyperparameters": {k: v for k, v in hyper.model_dump().items() if k not in RESUMABLE_CHANGES},
    }
    if architecture is not None:
        identity["architecture"] = architecture.model_dump(mode="json")
    _check_output(out, state, identity, resume)  # refuse before anything loads; checked again under the lock

    from .batches import BatchOrder, TrainingRows

    accelerator = _accelerator(hyper, state)
    order = BatchOrder.balanced(train_labels, hyper.batch_size, accelerator.num_processes, hyper.seed, hyper.class_balance)
    if scratch and accelerator.num_processes > 1:
        raise SkinsynthError("`--method scratch` trains on one process; run it without `accelerate launch`")
    if scratch and hyper.max_steps <= architecture.autoencoder_steps:
        raise SkinsynthError(f"`--max-steps {hyper.max_steps}` leaves no step for the UNet: the first {architecture.autoencoder_steps} train the autoencoder (`autoencoder_steps` of `--size {hyper.size or 'cpu-small'}`); raise --max-steps")
    if order.batches_per_epoch == 0:
        raise DatasetError(f"the train split has {len(train_split)} rows, fewer than one batch ({hyper.batch_size} x {accelerator.num_processes} processes); lower --batch-size")
    lock, checkpoint = _lock_output(accelerator, out, state, identity, resume)
    try:
        if checkpoint is not None:
            reached = int(checkpoint.name.split("-")[1])
            if reached > hyper.max_steps:
                raise SkinsynthError(f"the run in `{out}` is at step {reached}, past `--max-steps {hyper.max_steps}`; pass a larger --max-steps")
        if accelerator.is_main_process:
            from ..versions import library_versions

            out.mkdir(parents=True, exist_ok=True)
            run_config = {"identity": identity, "recipe": recipe.to_dict(), "hyperparameters": hyper.model_dump(), "num_processes": accelerator.num_processes, "library_versions": library_versions()}
            atomic_write_json(out / CONFIG_FILE, run_config)
            if scratch and not (state / INIT_DIR).is_dir():
                from .scratch import build_pipeline

                build_pipeline(state / INIT_DIR, architecture, recipe, hyper.resolution, hyper.seed)
        accelerator.wait_for_everyone()
        if scratch:
            folder = state / INIT_DIR

        trainer = Trainer(accelerator, hyper, recipe, folder, pipeline_class, out, state)
        rows = TrainingRows(train_split, captioner, trainer.parts.tokenizer, hyper.resolution, seed=hyper.seed)
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
                "training_data": data_reference,
                "training_license": training_license,
                "training_citation": citation,
                "steps": trainer.step,
                "hyperparameters": hyper.model_dump(),
                "final_loss": round(sum(recent) / len(recent), 6) if recent else None,
                **extra,
            }
            if architecture is not None:
                first_stage = trainer.losses[: architecture.autoencoder_steps][-FINAL_LOSS_WINDOW:]
                metadata["autoencoder_final_loss"] = round(sum(first_stage) / len(first_stage), 6) if first_stage else None
            atomic_write_json(out / MODEL_METADATA_FILE, metadata)
            write_model_card(out)
            logger.info("fine-tuned %s for %d steps in %.1f s; wrote %s", base, trainer.step, seconds, out)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    finally:
        if lock is not None:
            lock.release()
    return FinetuneResult(out, metadata or json.loads((out / MODEL_METADATA_FILE).read_text()), trainer.losses)
