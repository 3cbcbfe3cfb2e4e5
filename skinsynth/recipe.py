"""The dataset recipe: which classes, attributes, prompts, splits and generation settings make a synthetic dataset.

A recipe is a YAML file validated into frozen pydantic models before any model loads or any file is written.
Every error names the offending field, so a typo costs one run of a few milliseconds, not an hour of generation.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError

# Short names for the schedulers people use with Stable Diffusion; any diffusers `*Scheduler` class name works too.
SCHEDULER_ALIASES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
}

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"
SPLIT_PATTERN = r"^[A-Za-z0-9_]+$"  # what `datasets` accepts as a split name (no dashes: they separate shard names)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassSpec(_Frozen):
    """One label. `prompt` is the text that fills `{class}` in templates (defaults to the name with spaces).

    `attributes` optionally gives this class its own weights over an attribute's values (`{body_site: {back: 3,
    face: 1}}`; values left out get weight 0): in `weighted` splits they replace the attribute's weights for this
    class, so that melanomas and nevi can keep the body sites, ages and sexes they have in real data.
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    prompt: str | None = None
    weight: Annotated[float, Field(gt=0)] = 1.0
    attributes: dict[str, dict[str, Annotated[float, Field(ge=0)]]] | None = None

    @field_validator("attributes", mode="before")
    @classmethod
    def _text_values(cls, data):
        # YAML reads `{1: 0.5}` with a number key; attribute values are strings (`1` -> "1"), as in `AttributeSpec`.
        if isinstance(data, dict):
            return {name: {_as_text(k): w for k, w in weights.items()} if isinstance(weights, dict) else weights for name, weights in data.items()}
        return data

    @property
    def text(self) -> str:
        return self.prompt if self.prompt is not None else self.name.replace("_", " ")


class AttributeSpec(_Frozen):
    """An attribute axis (skin type, body site…): its values and, optionally, a sampling weight per value."""

    values: Annotated[tuple[str, ...], Field(min_length=1)]
    weights: tuple[Annotated[float, Field(ge=0)], ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list_or_mapping(cls, data):
        # YAML allows `[I, II]` (uniform) or `{I: 0.3, II: 0.7}` (weighted); numbers become strings (`1` -> "1").
        if isinstance(data, (list, tuple)):
            return {"values": [_as_text(v) for v in data]}
        if isinstance(data, dict) and "values" not in data:
            return {"values": [_as_text(k) for k in data], "weights": list(data.values())}
        return data

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"duplicate values in {list(self.values)}")
        if self.weights is not None and sum(self.weights) <= 0:
            raise ValueError("weights must not all be zero")
        return self


class Prompts(_Frozen):
    templates: Annotated[tuple[str, ...], Field(min_length=1)]
    negative: str = ""


class SplitSpec(_Frozen):
    """How many images a split holds (`per_class`, or a `total` shared by class weight) and how attributes are drawn.

    `balanced` cycles every class through all attribute combinations in a shuffled order, so each combination
    appears equally often; `weighted` draws each attribute independently by its weights (uniform when none).
    """

    per_class: Annotated[int, Field(ge=0)] | None = None
    total: Annotated[int, Field(ge=0)] | None = None
    attributes: Literal["balanced", "weighted"] = "balanced"

    @model_validator(mode="after")
    def _one_count(self):
        if (self.per_class is None) == (self.total is None):
            raise ValueError("give exactly one of `per_class` or `total`")
        return self


class Generation(_Frozen):
    num_inference_steps: Annotated[int, Field(ge=1)] = 30
    guidance_scale: Annotated[float, Field(ge=0)] | Annotated[tuple[Annotated[float, Field(ge=0)], ...], Field(min_length=1)] = 7.5
    height: Annotated[int, Field(ge=8, multiple_of=8)] = 512
    width: Annotated[int, Field(ge=8, multiple_of=8)] = 512
    scheduler: str | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    shard_size: Annotated[int, Field(ge=1)] = 1000
    image_format: Literal["png", "jpeg", "webp"] = "png"
    quality: Annotated[int, Field(ge=1, le=100)] = 95
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, name):
        if name is not None:
            scheduler_class_name(name)
        return name

    @property
    def guidance_scales(self) -> tuple[float, ...]:
        return self.guidance_scale if isinstance(self.guidance_scale, tuple) else (self.guidance_scale,)


class Recipe(_Frozen):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    license: str = "other"
    classes: Annotated[tuple[ClassSpec, ...], Field(min_length=1)]
    attributes: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], AttributeSpec] = {}
    prompts: Prompts
    splits: Annotated[dict[Annotated[str, Field(pattern=SPLIT_PATTERN)], SplitSpec], Field(min_length=1)]
    generation: Generation = Generation()

    @model_validator(mode="after")
    def _check(self):
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names {duplicates}")
        reserved = set(self.attributes) & RESERVED_COLUMNS
        if reserved:
            raise ValueError(f"attribute names {sorted(reserved)} are reserved for dataset columns")
        for spec in self.classes:
            for name, weights in (spec.attributes or {}).items():
                if name not in self.attributes:
                    raise ValueError(f"class `{spec.name}` weights attribute `{name}`, which is not in `attributes` ({sorted(self.attributes)})")
                unknown = sorted(set(weights) - set(self.attributes[name].values))
                if unknown:
                    raise ValueError(f"class `{spec.name}`: `{name}` values {unknown} are not among the attribute's values {list(self.attributes[name].values)}")
                if sum(weights.values()) <= 0:
                    raise ValueError(f"class `{spec.name}`: `{name}` weights must not all be zero")
        for template in self.prompts.templates:
            unknown = template_fields(template) - {"class", *self.attributes}
            if unknown:
                known = ["class", *self.attributes]
                raise ValueError(f"template {template!r} uses unknown placeholder(s) {sorted(unknown)}; known: {known}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def attribute_weights(self, class_index: int, name: str) -> list[float]:
        """The weights `weighted` sampling uses for attribute `name` in class `class_index`, one per value: the
        class's own when it has them, else the attribute's, else uniform."""
        spec = self.attributes[name]
        own = (self.classes[class_index].attributes or {}).get(name)
        if own is not None:
            return [float(own.get(value, 0.0)) for value in spec.values]
        return list(spec.weights) if spec.weights is not None else [1.0] * len(spec.values)

    def class_counts(self, split: str) -> list[int]:
        """Images per class in `split`; a `total` is shared by class weight (largest remainders, ties to earlier classes)."""
        spec = self.splits[split]
        if spec.per_class is not None:
            return [spec.per_class] * len(self.classes)
        weights = [c.weight for c in self.classes]
        exact = [spec.total * w / sum(weights) for w in weights]
        counts = [int(x) for x in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
        for i in by_remainder[: spec.total - sum(counts)]:
            counts[i] += 1
        return counts

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: two recipes with the same meaning have the same hash."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# Columns every dataset has; an attribute with one of these names would collide.
RESERVED_COLUMNS = {"image", "label", "prompt", "negative_prompt", "seed", "guidance_scale", "num_inference_steps", "group_id"}


def template_fields(template: str) -> set[str]:
    """The `{placeholders}` of a prompt template; positional `{}` and format specs are rejected."""
    fields = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"template {template!r} is not a valid format string: {err}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field) or spec or conversion:
            raise ValueError(f"template {template!r}: placeholder {{{field}}} must be a plain name like {{class}}")
        fields.add(field)
    return fields


def scheduler_class_name(name: str) -> str:
    """Resolve a scheduler alias (`ddim`, `dpm++`…) or a diffusers class name; raise ValueError for anything else."""
    resolved = SCHEDULER_ALIASES.get(name.lower(), name)
    import diffusers

    if not resolved.endswith("Scheduler") or not hasattr(diffusers, resolved):
        raise ValueError(f"unknown scheduler {name!r}; use a diffusers scheduler class name or one of {sorted(SCHEDULER_ALIASES)}")
    return resolved


def _as_text(value) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"attribute values must be strings or numbers, got {value!r}")


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-", "constrained-")))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        message += f" (got {first['input']!r})"
    more = len(error.errors()) - 1
    return f"`{location or 'recipe'}`: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (e.g. from YAML) into a `Recipe`, or raise `RecipeError` naming the field."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys (name, classes, prompts, splits…), got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{source}: {_describe(err)}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"recipe file {str(path)!r} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    return parse_recipe(data, source=str(path))
