"""Captions for real training images, written with the recipe's own templates.

The model must learn the vocabulary that `generate` will use: a row's caption is one of the recipe's prompt
templates filled with the row's label (the class text, or its learned token for textual inversion) and its own
attribute columns. Which template, whether the caption is dropped (empty prompt, to keep classifier-free
guidance working) and whether only its class is left out (`class_dropout`: the model learns the caption a recipe's
`class_free_negative` guides against) depends only on (seed, epoch, row), so a resumed run sees the very same captions.

A template needs every one of its placeholders to be known for the row; a row with an unknown value (None) is
captioned with one of the templates it can fill, and with the class text alone when it can fill none (or the empty caption, when class dropout
leaves the class out: such rows add to the share of empty captions). Captions never contain invented attribute values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import DatasetError, RecipeError
from ..recipe import Recipe, fill_template, template_fields


def class_token(class_name: str) -> str:
    """The new token textual inversion learns for a class: `melanoma` -> `<melanoma>` (the paper: one per class)."""
    return f"<{class_name.lower()}>"


# DreamBooth's identifiers: short strings the base's tokenizer splits into rare pieces that mean little yet, so the
# model binds them to a class's look without unlearning a word it knows (Ruiz et al.: "a [V] dog"; diffusers' "sks").
INSTANCE_IDENTIFIERS = ("sks", "ohwx", "zwx", "qxv", "vkt", "pjq", "xkd", "wqz", "bxj", "fjq", "kqz", "zqv")


def instance_token(class_index: int) -> str:
    """The rare identifier DreamBooth binds to the recipe's class `class_index`: one per class, as synderm trains one
    subject per disease; past the twelfth class, the identifiers again with a number (`sks2`)."""
    cycle, position = divmod(class_index, len(INSTANCE_IDENTIFIERS))
    return INSTANCE_IDENTIFIERS[position] + (str(cycle + 1) if cycle else "")


def class_words(recipe: Recipe, method: str) -> list[str]:
    """What fills `{class}` for each recipe class: its prompt text; its learned token for textual inversion; its
    instance token before its text for DreamBooth (`sks melanoma`: the class noun keeps the base's prior)."""
    if method == "textual-inversion":
        return [class_token(c.name) for c in recipe.classes]
    if method == "dreambooth":
        return [f"{instance_token(i)} {c.text}" for i, c in enumerate(recipe.classes)]
    return [c.text for c in recipe.classes]


def _uniform(seed: int, epoch: int, row: int, *stream: int) -> float:
    return float(np.random.default_rng([seed, epoch, row, *stream]).random())


@dataclass(frozen=True)
class Captioner:
    """Caption of a dataset row at an epoch. `words[label]` fills `{class}` (indexed by the dataset's label ids)."""

    templates: tuple[str, ...]
    words: tuple[str, ...]
    dropout: float = 0.0
    seed: int = 0
    class_dropout: float = 0.0

    @property
    def columns(self) -> list[str]:
        """The attribute columns the templates read."""
        return sorted(set().union(*(template_fields(t) for t in self.templates)) - {"class"})

    def __call__(self, row: Mapping, index: int, epoch: int) -> str:
        if self.dropout and _uniform(self.seed, epoch, index) < self.dropout:
            return ""
        values = {name: row[name] for name in self.columns}
        usable = [t for t in self.templates if all(values[f] is not None for f in template_fields(t) - {"class"})]
        word = self.words[row["label"]]
        if self.class_dropout and _uniform(self.seed, epoch, index, 1) < self.class_dropout:
            word = None
        if not usable:
            return word or ""
        template = usable[(index + epoch) % len(usable)]
        return fill_template(template, word, {name: str(value) for name, value in values.items() if value is not None})


def build_captioner(recipe: Recipe, label_names: Sequence[str], columns: Sequence[str], *, method: str, dropout: float = 0.0, class_dropout: float = 0.0,
                    seed: int = 0) -> Captioner:
    """Check that the recipe can caption this dataset, and return its `Captioner`.

    Raises (before any model loads) when a template lacks `{class}`, when a placeholder has no column in the
    dataset, or when the dataset's class names and the recipe's differ.
    """
    for template in recipe.prompts.templates:
        if "class" not in template_fields(template):
            raise RecipeError(f"template {template!r} has no {{class}} placeholder: captions without the label cannot teach the model the classes; add {{class}}")
    missing = sorted(set().union(*(template_fields(t) for t in recipe.prompts.templates)) - {"class"} - set(columns))
    if missing:
        raise DatasetError(
            f"the recipe's templates use {', '.join('{' + m + '}' for m in missing)} but the dataset has no such column "
            f"(it has: {', '.join(columns)}); remove the placeholder from `prompts.templates`, or write the recipe from this dataset"
        )
    recipe_names = recipe.label_names
    if set(label_names) != set(recipe_names):
        only_data = sorted(set(label_names) - set(recipe_names))
        only_recipe = sorted(set(recipe_names) - set(label_names))
        raise DatasetError(
            "the dataset's labels and the recipe's classes differ by name"
            + (f"; only in the dataset: {only_data}" if only_data else "")
            + (f"; only in the recipe: {only_recipe}" if only_recipe else "")
            + ". Rename the recipe's classes to the dataset's label names (a caption needs each label's class text)"
        )
    words = class_words(recipe, method)
    by_name = dict(zip(recipe_names, words))
    return Captioner(recipe.prompts.templates, tuple(by_name[name] for name in label_names), dropout, seed, class_dropout)


class Prompt(NamedTuple):
    text: str
    negative: str


def validation_prompts(recipe: Recipe, words: Sequence[str], per_class: int) -> list[list[Prompt]]:
    """`per_class` fixed prompts (with their negative prompts) for each recipe class: column j uses template j and
    every attribute's value j (cycling), so the validation grid shows the same prompts at every step."""
    rows = []
    for word in words:
        prompts = []
        for j in range(per_class):
            template = recipe.prompts.templates[j % len(recipe.prompts.templates)]
            values = {name: spec.values[j % len(spec.values)] for name, spec in recipe.attributes.items()}
            prompts.append(Prompt(fill_template(template, word, values), recipe.negative_prompt(template, values)))
        rows.append(prompts)
    return rows


def token_recipe(recipe: Recipe, method: str = "textual-inversion") -> Recipe:
    """The recipe with each class's prompt replaced by what the method trained it with (`class_words`): the learned
    token for textual inversion, the instance token and class text for DreamBooth; for generating with the result."""
    classes = [c.model_copy(update={"prompt": word}) for c, word in zip(recipe.classes, class_words(recipe, method))]
    return recipe.model_copy(update={"classes": tuple(classes)})
