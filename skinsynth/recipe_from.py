"""A generation recipe that is the synthetic twin of a real dataset: same classes, class balance and attribute mix.

The benchmark asks "what is a synthetic image worth compared to a real one?"; that question is only fair when the
synthetic set has the real training split's label distribution and the same attribute values in the same
proportions. This module counts them in the train split and writes them into a recipe: class weights are the
train counts (so `total` reproduces the class distribution), attribute weights are the train frequencies
(unknown values left out), each class also gets its own attribute weights (melanomas and nevi do not share body
sites, ages or sexes, so the twin reproduces the class x attribute table, not just each margin), and the prompt
templates mention every attribute. Ages go in decades (`40-49`): one value per year would make prompts and card
tables as fine-grained as the source's rounding, and sparse per class.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

from .data import open_dataset
from .errors import OutputError, SkinsynthError
from .recipe import NAME_PATTERN, RESERVED_COLUMNS, Recipe, parse_recipe
from .shards import atomic_write_text, read_manifest

logger = logging.getLogger(__name__)

# How an attribute reads in a prompt; any other attribute reads "NAME VALUE" (`lesion size {lesion_size}`).
PHRASES = {
    "body_site": "on the {body_site}",
    "fitzpatrick": "Fitzpatrick skin type {fitzpatrick}",
    "sex": "{sex} patient",
    "age": "age {age}",
}
BANDED = ("age",)  # numeric attributes written as decades
MAX_AUTO_VALUES = 100  # a string column of a Hub dataset with more distinct values is an id, not an attribute


def _declared_attributes(dataset: str, features) -> list[str] | None:
    """The attribute columns a skinsynth manifest declares, when `dataset` is a local skinsynth folder."""
    if not Path(dataset).expanduser().is_dir():
        return None
    try:
        name, manifest = read_manifest(Path(dataset).expanduser())
    except SkinsynthError:
        return None
    declared = manifest.get("attributes") if name == "prepare.json" else list(manifest.get("recipe", {}).get("attributes", {}))
    return [a for a in declared or [] if a in features]


def _class_spec(name: str) -> dict:
    """A recipe class for a label; a label that is not a valid recipe name (spaces, capitals…) is slugged, and its
    original text becomes the prompt."""
    if re.fullmatch(NAME_PATTERN, name):
        return {"name": name}
    return {"name": re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") or "class", "prompt": name}


def age_band(value: str) -> str:
    """`47` or `47.0` -> `40-49`; a value that is not a number (a source's own band, `40-49`) is kept."""
    try:
        low = int(float(value)) // 10 * 10
    except ValueError:
        return value
    return f"{low}-{low + 9}"


def _band_order(value: str) -> tuple:
    match = re.match(r"-?\d+(\.\d+)?", value)
    return (0, float(match.group()), value) if match else (1, 0.0, value)


def source_name(dataset: str) -> str:
    """How a twin names its source: the dataset's own name (from `prepare.json` or the recipe) for a local
    skinsynth folder, the Hub id as given otherwise; never a local path, which would be published in the card."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        try:
            kind, manifest = read_manifest(path)
        except SkinsynthError:
            return path.resolve().name
        if kind == "prepare.json":
            return (manifest.get("source") or {}).get("repo_id") or (manifest.get("source") or {}).get("name") or path.resolve().name
        return manifest.get("recipe", {}).get("name") or path.resolve().name
    return dataset


def default_templates(attributes: list[str]) -> list[str]:
    """Two prompt templates that mention every attribute, in a readable order (site, skin type, sex, age, others)."""
    ordered = [a for a in PHRASES if a in attributes] + [a for a in attributes if a not in PHRASES]
    phrases = [PHRASES.get(a, f"{a.replace('_', ' ')} {{{a}}}") for a in ordered]
    tail = f", {', '.join(phrases)}" if phrases else ""
    return [f"a dermatology image of {{class}}{tail}", f"{{class}}{tail}"]


def recipe_from(
    dataset: str | Path,
    out: str | Path | None = None,
    *,
    split: str = "train",
    per_class: int | None = None,
    total: int | None = None,
    size: int = 512,
    steps: int = 30,
    guidance_scale: float = 7.5,
    attributes: list[str] | None = None,
    templates: list[str] | None = None,
    class_free_negative: bool = False,
    name: str | None = None,
    revision: str | None = None,
    overwrite: bool = False,
) -> Recipe:
    """Count classes and attribute values in `dataset`'s `split` and return (and write to `out`) the twin recipe.

    Mirrors `skinsynth recipe-from`. By default the synthetic train split has as many images as the real one, in
    the same class proportions; `total` scales that, `per_class` makes it balanced. A validation split in the
    same proportion is added when the dataset has one. `attributes` defaults to those the dataset's manifest
    declares (for a Hub dataset: its string columns with at most 100 distinct values). `templates` replace the
    default prompt templates (which name the class and every attribute); they may use `{class}` and the attributes.
    `class_free_negative` guides each image against its own prompt without the class (for a model trained with
    `--class-dropout`; see `recipe.Prompts`).
    """
    if per_class is not None and total is not None:
        raise SkinsynthError("give `--per-class` or `--total`, not both")
    for option, value in (("per-class", per_class), ("total", total)):
        if value is not None and value < 1:
            raise SkinsynthError(f"`--{option}` must be at least 1, got {value}")
    if size < 8 or size % 8:
        raise SkinsynthError(f"`--size` must be a multiple of 8 (diffusion models work on 8x-downsampled latents), got {size}")
    if steps < 1:
        raise SkinsynthError(f"`--steps` must be at least 1, got {steps}")
    if guidance_scale < 0:
        raise SkinsynthError(f"`--guidance-scale` must be at least 0, got {guidance_scale}")
    if out is not None and Path(out).exists() and not overwrite:
        raise OutputError(f"`{out}` exists; choose another --out or pass --overwrite")

    data = open_dataset(dataset, revision=revision, required_splits=(split,))
    part = data[split]
    label_names = part.features["label"].names
    counts = Counter(part["label"])
    present = [i for i in range(len(label_names)) if counts[i]]
    if not present:
        raise SkinsynthError(f"the `{split}` split of `{dataset}` is empty")
    absent = [label_names[i] for i in range(len(label_names)) if not counts[i]]
    if absent:
        logger.warning("no %s image of %s: left out of the recipe", split, ", ".join(absent))

    if attributes is None:
        attributes = _declared_attributes(str(dataset), part.features)
    if attributes is None:
        string_columns = [c for c, f in part.features.items() if getattr(f, "dtype", None) == "string" and c not in RESERVED_COLUMNS]
        attributes = [c for c in string_columns if len(set(part[c])) <= MAX_AUTO_VALUES]
    unknown = [a for a in attributes if a not in part.features]
    if unknown:
        raise SkinsynthError(f"`{dataset}` has no column(s) {unknown}; its columns are {list(part.features)}")
    attribute_specs, class_weights = {}, {i: {} for i in present}
    for attribute in attributes:
        column = [None if v is None else age_band(v) if attribute in BANDED else v for v in part[attribute]]
        values = Counter(v for v in column if v is not None)
        if not values:
            logger.warning("attribute `%s` is unknown for every image of `%s`; left out of the recipe", attribute, split)
            continue
        numeric = all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in values) or attribute in BANDED
        ranked = sorted(values, key=_band_order) if numeric else sorted(values, key=lambda v: (-values[v], v))
        attribute_specs[attribute] = {v: values[v] for v in ranked}
        joint = Counter((label, v) for label, v in zip(part["label"], column) if v is not None)
        for i in present:
            own = {v: joint[(i, v)] for v in ranked if joint[(i, v)]}
            if own:  # a class whose images all lack the value keeps the attribute's overall weights
                class_weights[i][attribute] = own

    n_train = sum(counts.values())
    count = {"per_class": per_class} if per_class is not None else {"total": total or n_train}
    splits = {"train": {**count, "attributes": "weighted"}}
    if split == "train" and "validation" in data and len(data["validation"]):
        ratio = len(data["validation"]) / n_train
        val_count = {"per_class": max(1, round(per_class * ratio))} if per_class is not None else {"total": max(1, round((total or n_train) * ratio))}
        splits["validation"] = {**val_count, "attributes": "weighted"}

    source = source_name(str(dataset))
    recipe = parse_recipe(
        {
            "name": name or re.sub(r"[^0-9A-Za-z_\-]+", "-", f"{source}-synthetic").strip("-_"),
            "description": f"Synthetic twin of {source} ({split} split: {n_train} images): same classes, class balance and class x attribute frequencies.",
            "license": _source_license(str(dataset)),
            "classes": [{**_class_spec(label_names[i]), "weight": counts[i], **({"attributes": class_weights[i]} if class_weights[i] else {})} for i in present],
            "attributes": attribute_specs,
            "prompts": {"templates": templates or default_templates(list(attribute_specs)), **({"class_free_negative": True} if class_free_negative else {})},
            "splits": splits,
            "generation": {"height": size, "width": size, "num_inference_steps": steps, "guidance_scale": guidance_scale},
        },
        source=f"recipe from {dataset}",
    )
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, recipe.to_yaml())
    return recipe


def _source_license(dataset: str) -> str:
    """The real dataset's license: images made by a model fine-tuned on it may carry its terms (HAM10000: NC-SA)."""
    try:
        _, manifest = read_manifest(Path(dataset).expanduser())
    except SkinsynthError:
        return "other"
    return manifest.get("license") or "other"
