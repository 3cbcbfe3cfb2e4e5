"""The training options of `skinsynth finetune`, validated before anything loads, and the defaults each method
fills in for the options left unset."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SkinsynthError

DEFAULT_LEARNING_RATES = {"lora": 1e-4, "full": 1e-5, "textual-inversion": 5e-4, "scratch": 5e-4}  # as in diffusers' example scripts
# Training from scratch drops some captions by default: classifier-free guidance needs an unconditional model.
DEFAULT_CAPTION_DROPOUT = {"scratch": 0.1}
# ... and leaves the class out of as many (attributes kept), so that a recipe's `class_free_negative` can guide
# along the class alone: measured on HAM10000, balanced label fidelity 0.48 -> 0.55 at the same compute (README).
DEFAULT_CLASS_DROPOUT = {"scratch": 0.1}
# Min-SNR-gamma loss weighting (Hang et al. 2023) for training from scratch: the easy, low-noise steps stop
# dominating the loss, so the model spends its capacity where the layout (and the class) is decided.
DEFAULT_SNR_GAMMA = {"scratch": 5.0}
# DreamBooth (Ruiz et al. 2023) as diffusers' `train_dreambooth*.py`: `--num_class_images 100`, `--prior_loss_weight 1.0`.
DEFAULT_DREAMBOOTH_ADAPTER = "lora"
DEFAULT_PRIOR_IMAGES = 100  # per class; 0 trains without prior preservation
DEFAULT_PRIOR_LOSS_WEIGHT = 1.0
DREAMBOOTH_OPTIONS = ("dreambooth_adapter", "prior_images", "prior_loss_weight")
# Options that may change when a run is resumed (train longer, checkpoint or validate more often; `cache_latents`
# draws the same latents, from distributions the VAE encoded in other batches: equal to float rounding).
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "validate_every", "validation_images", "dataloader_workers", "cache_latents"}


class Hyperparameters(BaseModel):
    """The training options, validated before anything loads; `None` means "the method's or model's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lora", "full", "textual-inversion", "dreambooth", "scratch"] = "lora"
    dreambooth_adapter: Literal["lora", "full"] | None = None  # dreambooth only: what learns (None: lora)
    prior_images: Annotated[int, Field(ge=0)] | None = None  # dreambooth only: class images per class (None: 100)
    prior_loss_weight: Annotated[float, Field(ge=0)] | None = None  # dreambooth only (None: 1.0)
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
    gradient_checkpointing: bool | None = None  # None: on for the large families (`Family.large_model`)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    use_8bit_adam: bool | None = None  # None: on for the large families where bitsandbytes and CUDA are there
    cache_latents: bool = False
    ema: bool = False
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    class_dropout: Annotated[float, Field(ge=0, lt=1)] | None = None  # share of captions with the class left out
    snr_gamma: Annotated[float, Field(ge=0)] | None = None  # 0: plain MSE
    class_balance: Annotated[float, Field(ge=0, le=1)] = 0.0
    lora_rank: Annotated[int, Field(ge=1)] = 4
    weight_decay: Annotated[float, Field(ge=0)] = 1e-2
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    dataloader_workers: Annotated[int, Field(ge=0)] = 0

    def recorded(self) -> dict:
        """The options as the run's files record them: the DreamBooth settings only for a DreamBooth run, and the
        class dropout only when there is some, so the records (and the identity `--resume` compares) of other runs
        stay as they were before those options."""
        values = self.model_dump()
        if self.method != "dreambooth":
            values = {k: v for k, v in values.items() if k not in DREAMBOOTH_OPTIONS}
        if not self.class_dropout:  # likewise for runs before `--class-dropout`
            del values["class_dropout"]
        return values


def eight_bit_adam_available() -> bool:
    """bitsandbytes is installed and there is a CUDA GPU for it."""
    import importlib.util

    import torch

    return importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available()


def parse_hyperparameters(options: dict) -> Hyperparameters:
    try:
        hyper = Hyperparameters(**options)
    except ValidationError as err:
        first = err.errors()[0]
        name = "--" + str(first["loc"][0]).replace("_", "-")
        raise SkinsynthError(f"`{name}`: {first['msg']} (got {first.get('input')!r})") from None
    if hyper.ema and hyper.method not in ("full", "scratch") and not (hyper.method == "dreambooth" and hyper.dreambooth_adapter == "full"):
        raise SkinsynthError("`--ema` keeps an average of the UNet's weights: it applies to `--method full`, `--method scratch` and `--method dreambooth --dreambooth-adapter full` only")
    for option in DREAMBOOTH_OPTIONS:
        if getattr(hyper, option) is not None and hyper.method != "dreambooth":
            raise SkinsynthError(f"`--{option.replace('_', '-')}` is a DreamBooth setting: it applies to `--method dreambooth` only")
    for option in ("size", "config"):
        if getattr(hyper, option) is not None and hyper.method != "scratch":
            raise SkinsynthError(f"`--{option}` sets the architecture of a model trained from scratch: it applies to `--method scratch` only")
    if hyper.class_dropout and hyper.method == "textual-inversion":
        raise SkinsynthError("`--class-dropout` teaches the caption without the class; textual inversion trains only the class tokens, which such a caption does not contain: leave the option out")
    if hyper.cache_latents and hyper.method == "scratch":
        raise SkinsynthError("`--cache-latents` keeps the VAE's latents of each image; `--method scratch` trains the VAE, so they change every step: leave the option out")
    if hyper.use_8bit_adam:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise SkinsynthError("`--use-8bit-adam` needs bitsandbytes (`pip install bitsandbytes`, CUDA only); or leave the option out") from None
    return hyper


def fill_method_defaults(hyper: Hyperparameters) -> Hyperparameters:
    """`hyper` with the DreamBooth settings left unset filled in (diffusers' defaults), so that the run's recorded
    configuration, and what `--resume` compares, says what was used."""
    if hyper.method != "dreambooth":
        return hyper
    return hyper.model_copy(update={
        "dreambooth_adapter": hyper.dreambooth_adapter or DEFAULT_DREAMBOOTH_ADAPTER,
        "prior_images": DEFAULT_PRIOR_IMAGES if hyper.prior_images is None else hyper.prior_images,
        "prior_loss_weight": DEFAULT_PRIOR_LOSS_WEIGHT if hyper.prior_loss_weight is None else hyper.prior_loss_weight,
    })
