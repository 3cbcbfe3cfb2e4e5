"""The dataset recipe: which classes, attributes, prompts, splits and generation settings make a synthetic dataset.

A recipe is a YAML file validated into frozen pydantic models before any model loads or any file is written.
Every error names the offending field, so a typo costs one run of a few milliseconds, not an hour of generation.
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
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

# Names become dataset columns, label names, file names, Hub repo names and card text: sane lengths, checked here.
MAX_NAME = 96  # a Hub repo name's limit
MAX_VALUE = 200  # attribute values and class prompts (text inside prompts)
MAX_TEXT = 2000  # prompt templates, the negative prompt
MAX_IMAGES_PER_SPLIT = 10_000_000  # a plan holds every image's seed and choices in memory (about 30 bytes each)
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=MAX_NAME)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassSpec(_Frozen):
    """One label. `prompt` is the text that fills `{class}` in templates (defaults to the name with spaces).

    `attributes` optionally gives this class its own weights over an attribute's values (`{body_site: {back: 3,
    face: 1}}`; values left out get weight 0): in `weighted` splits they replace the attribute's weights for this
    class, so that melanomas and nevi can keep the body sites, ages and sexes they have in real data.
    """

    name: Name
    prompt: Annotated[str, Field(max_length=MAX_VALUE)] | None = None
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

    values: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=MAX_VALUE)], ...], Field(min_length=1, max_length=1000)]
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
    """The prompt templates (`{class}` and attribute placeholders), and what classifier-free guidance steers away from.

    `negative` is one text for every image. `class_free_negative: true` instead gives each image its own prompt
    with the class left out (same template, same attributes): guidance then pushes along the class alone and leaves
    body site, sex and age where the model puts them for that caption. A model learns that class-free caption when
    it is trained with `finetune --class-dropout`.
    """

    templates: Annotated[tuple[Annotated[str, Field(max_length=MAX_TEXT)], ...], Field(min_length=1, max_length=1000)]
    negative: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    class_free_negative: bool | None = None  # None and false: `negative`; left out, it stays out of the recipe's hash

    @field_validator("class_free_negative")
    @classmethod
    def _false_is_left_out(cls, value):
        return value or None  # `false` means what leaving it out means, and hashes the same

    @model_validator(mode="after")
    def _one_negative(self):
        if self.class_free_negative and self.negative:
            raise ValueError("give either `negative` (one text for every image) or `class_free_negative: true` (each prompt without its class), not both")
        return self


class SplitSpec(_Frozen):
    """How many images a split holds (`per_class`, or a `total` shared by class weight) and how attributes are drawn.

    `balanced` cycles every class through all attribute combinations in a shuffled order, so each combination
    appears equally often; `weighted` draws each attribute independently by its weights (uniform when none).
    """

    per_class: Annotated[int, Field(ge=0)] | None = None  # capped with the split's total (`Recipe._check`)
    total: Annotated[int, Field(ge=0)] | None = None
    attributes: Literal["balanced", "weighted"] = "balanced"

    @model_validator(mode="after")
    def _one_count(self):
        if (self.per_class is None) == (self.total is None):
            raise ValueError("give exactly one of `per_class` or `total`")
        return self


class Generation(_Frozen):
    """How each image is made. Most settings apply to every family; `max_sequence_length` (T5 tokens per prompt) is
    for Stable Diffusion 3 and Flux, `drop_t5: true` (load without the T5 encoder) for Stable Diffusion 3 only;
    `skinsynth.families` refuses a setting the model's family does not have. Left out, they stay out of the recipe's
    hash, so recipes written before they existed keep theirs."""

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
    max_sequence_length: Annotated[int, Field(ge=1, le=512)] | None = None  # None: the pipeline's default (SD3 256, Flux 512)
    drop_t5: bool | None = None  # None and false: the T5 encoder loads

    @property
    def guidance_scales(self) -> tuple[float, ...]:
        return self.guidance_scale if isinstance(self.guidance_scale, tuple) else (self.guidance_scale,)


class Recipe(_Frozen):
    name: Name
    description: Annotated[str, Field(max_length=20_000)] = ""
    license: Annotated[str, Field(max_length=MAX_NAME)] = "other"
    classes: Annotated[tuple[ClassSpec, ...], Field(min_length=1, max_length=10_000)]
    attributes: Annotated[dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)], AttributeSpec], Field(max_length=32)] = {}
    prompts: Prompts
    splits: Annotated[dict[Annotated[str, Field(pattern=SPLIT_PATTERN, max_length=64)], SplitSpec], Field(min_length=1, max_length=16)]
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
        for split in self.splits:
            images = sum(self.class_counts(split))
            if images > MAX_IMAGES_PER_SPLIT:
                raise ValueError(f"split `{split}` asks for {images:,} images; a recipe plans at most {MAX_IMAGES_PER_SPLIT:,} per split (split a bigger dataset into several recipes)")
        if not any(sum(self.class_counts(split)) for split in self.splits):
            raise ValueError("every split asks for 0 images: give `per_class` or `total` a count above 0 in at least one split")
        for template in self.prompts.templates:
            unknown = template_fields(template) - {"class", *self.attributes}
            if unknown:
                known = ["class", *self.attributes]
                raise ValueError(f"template {template!r} uses unknown placeholder(s) {sorted(unknown)}; known: {known}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def negative_prompt(self, template: str, attributes: dict[str, str]) -> str:
        """The negative prompt of an image made from `template` with `attributes` (see `Prompts`)."""
        return fill_template(template, None, attributes) if self.prompts.class_free_negative else self.prompts.negative

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


_CLASS_SLOT = "\x00"  # where `{class}` was, in a template filled without it


def fill_template(template: str, class_text: str | None, attributes: dict[str, str]) -> str:
    """`template` with `{class}` and the attribute placeholders filled. `class_text=None` leaves the class out and
    tidies the space and punctuation it leaves (`"{class}, on the {site}"` -> `"on the back"`): the class-free
    caption of `finetune --class-dropout` and of `class_free_negative`, the same text in training and generation.
    Only the class's slot is tidied: attribute values and the rest of the template stay as written."""
    if class_text is not None:
        return template.format(**{"class": class_text, **attributes})
    text = template.format(**{"class": _CLASS_SLOT, **attributes})
    text = re.sub(rf"^\s*{_CLASS_SLOT}[\s,;:]*", "", text)  # leading: "{class}, on the back" -> "on the back"
    text = re.sub(rf"\s*{_CLASS_SLOT}\s*(?=[,;:.]|$)", "", text)  # before punctuation or at the end
    return re.sub(rf"\s*{_CLASS_SLOT}\s*", " ", text)  # between words: one space


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
    location = ".".join(shorten(str(part)) for part in first["loc"] if not str(part).startswith(("function-", "constrained-")))
    message = shorten(first["msg"].removeprefix("Value error, "), 400)
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        message += f" (got {_bounded_repr(first['input'])})"
    more = len(error.errors()) - 1
    return f"`{location or 'recipe'}`: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (e.g. from YAML) into a `Recipe`, or raise `RecipeError` naming the field."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys (name, classes, prompts, splits…), got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{source}: {_describe(err)}") from None
    if recipe.generation.scheduler is not None:  # last: it imports diffusers (seconds), so other mistakes answer first
        try:
            scheduler_class_name(recipe.generation.scheduler)
        except ValueError as err:
            raise RecipeError(f"{source}: `generation.scheduler`: {err}") from None
    return recipe


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters: an error message never echoes unbounded input."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _bounded_repr(value) -> str:
    """A short `repr` that never builds the whole text (a YAML alias bomb's value would be gigabytes)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict, short.maxstring, short.maxother = 3, 4, 4, 4, 60, 60
    return shorten(short.repr(value))


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses more than `MAX_ALIASES` aliases (`*name`): a few anchors keep a file short,
    thousands are a "billion laughs" bomb whose expansion would exhaust memory in whatever walks it."""

    MAX_ALIASES = 100

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen = getattr(self, "aliases_seen", 0) + 1
            if self.aliases_seen > self.MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"more than {self.MAX_ALIASES} aliases (`*name`) at line {mark.line + 1}; write the values out")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path, what: str):
    """The YAML file `path` (a `what`: recipe, arms, mapping…) parsed safely, or a `RecipeError` of one line that
    starts with the file name and says where the problem is."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{what} file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise RecipeError(f"{path}: line {line}: not UTF-8 (byte 0x{err.object[err.start]:02x}); save the file as UTF-8") from None
    except OSError as err:
        raise RecipeError(f"{what} file {str(path)!r} cannot be read: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise RecipeError(f"{path}: not valid YAML: {where}{shorten(problem, 200)}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {shorten(' '.join(str(err).split()), 200)}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file."""
    return parse_recipe(load_yaml(path, "recipe"), source=str(path))
