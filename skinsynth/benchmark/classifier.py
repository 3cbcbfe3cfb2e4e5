"""The classifier every benchmark run starts from: which models qualify, what names them, their weights and inputs.

The classifier is any transformers `AutoModelForImageClassification`: a Hub id (pretrained; `timm/…` ids too
when timm is installed, through transformers' timm wrapper), a local model folder, or a folder holding only a
`config.json` (random weights: training from scratch). Its image processor gives the pixel statistics and input
size training and evaluation use (`normalization`); its key (`classifier_key`) is part of every run's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Normalization:
    """Pixel statistics and the input size a model expects (from its image processor, or ImageNet's)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None


def _load_config(model: str, revision: str | None):
    from transformers import AutoConfig

    local = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not local.exists():
        raise PipelineError(f"model folder `{model}` does not exist")
    if local.is_dir() and not (local / "config.json").is_file():
        raise PipelineError(f"`{model}` has no config.json: pass a transformers image-classification model folder (or one holding only its config.json, to train from scratch) or a Hub id")
    try:
        return AutoConfig.from_pretrained(str(local) if local.exists() else model, revision=revision)
    except ImportError as err:
        raise PipelineError(f"model `{model}` needs a library that is not installed ({err}); timm models need timm, after a torchvision that matches your torch (README.md, Optional: torchvision and timm)") from err
    except Exception as err:  # offline, missing repo, unknown model type…
        raise PipelineError(f"cannot load the config of model `{model}`: {err}") from err


def check_classifier(model: str, revision: str | None = None):
    """The model's config, if transformers has an image-classification head for it; else a `PipelineError`."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    config = _load_config(model, revision)
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise PipelineError(
            f"`{model}` is a `{config.model_type}` model, which has no image-classification head in transformers; "
            "use an image classifier or backbone such as microsoft/resnet-50, facebook/convnext-tiny-224 or google/vit-base-patch16-224"
        )
    return config


def classifier_key(model: str, revision: str | None, config) -> dict:
    """What names the classifier every run starts from, as `generate` names its diffusion model: a local folder by
    its fingerprint (cached), a Hub id by the commit its config (`check_classifier`'s) was loaded from."""
    local = Path(model).expanduser()
    if local.is_dir():
        from ..fingerprint import folder_fingerprint

        return {"model": model, "revision": revision, "fingerprint": folder_fingerprint(local)}
    return {"model": model, "revision": revision, "commit": getattr(config, "_commit_hash", None)}


def load_classifier(model: str, class_names: list[str], revision: str | None = None):
    """A classifier with a fresh head for `class_names`: pretrained weights when the model has them, else random."""
    from transformers import AutoModelForImageClassification

    config = check_classifier(model, revision)
    labels = {"num_labels": len(class_names), "id2label": dict(enumerate(class_names)), "label2id": {n: i for i, n in enumerate(class_names)}}
    local = Path(model).expanduser()
    if local.is_dir() and not any((local / name).is_file() for name in WEIGHT_FILES):
        for key, value in labels.items():
            setattr(config, key, value)
        return AutoModelForImageClassification.from_config(config)
    try:
        return AutoModelForImageClassification.from_pretrained(str(local) if local.exists() else model, revision=revision, ignore_mismatched_sizes=True, **labels)
    except Exception as err:
        raise PipelineError(f"cannot load the weights of model `{model}`: {err}") from err


def normalization(model: str, revision: str | None = None) -> Normalization:
    """Mean, std and input size from the model's image processor.

    Only a folder holding a config and no weights (training from scratch) has no processor by design: it gets
    ImageNet statistics. A pretrained model whose processor cannot be loaded stops the run: training it with
    other statistics or another input size than it was pretrained with would quietly cost accuracy.
    """
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    local = Path(model).expanduser()
    if local.is_dir() and not (local / "preprocessor_config.json").is_file():
        if not any((local / name).is_file() for name in WEIGHT_FILES):
            return Normalization(tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
        raise PipelineError(
            f"model folder `{model}` has weights but no preprocessor_config.json, so its input statistics and size are unknown; "
            "save the model's image processor into it (`AutoImageProcessor.from_pretrained(HUB_ID).save_pretrained(DIR)`)"
        )
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(local) if local.exists() else model, revision=revision)
    except Exception as err:
        raise PipelineError(
            f"cannot load the image processor of model `{model}` ({type(err).__name__}: {err}); the benchmark needs its mean, std and "
            "input size: check the id and your connection, or use a local folder holding the model and its preprocessor_config.json"
        ) from err
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None)
    return Normalization(
        tuple(getattr(processor, "image_mean", None) or IMAGENET_DEFAULT_MEAN),
        tuple(getattr(processor, "image_std", None) or IMAGENET_DEFAULT_STD),
        _side(size),
    )


def _side(size) -> int | None:
    """The square input side of an image processor's `size`/`crop_size` (an int, a dict or transformers' SizeDict)."""
    if size is None or isinstance(size, int):
        return size
    field = size.get if isinstance(size, dict) else lambda name: getattr(size, name, None)
    return field("height") or field("shortest_edge")

