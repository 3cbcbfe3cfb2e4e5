"""Expand a recipe into a deterministic list of image jobs.

Every random choice (seed, prompt template, guidance scale, weighted attributes, the order of balanced attribute
combinations) comes from its own numpy stream keyed by the base seed, the split and the name of the choice. Item `i`
of a stream depends only on those keys and on `i`, so an image's seed depends only on (base seed, split, index):
never on batch size, shard layout, `--limit` or the number of processes. Plans are columnar (numpy arrays) so that
planning a million images takes about a second; `SplitPlan.job(i)` builds one job when it is needed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .recipe import Recipe, fill_template

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ImageJob:
    """Everything needed to make one image, and everything recorded about it in its dataset row."""

    split: str
    index: int
    label: int
    attributes: dict[str, str]
    prompt: str
    negative_prompt: str
    guidance_scale: float
    num_inference_steps: int
    seed: int


def _stream(base_seed: int, split: str, name: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(f"{split}\0{name}".encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([base_seed, key])))


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of the `attempt`-th try at an image (attempt 0 is the planned seed).

    A retry (the safety checker blanked the image, or a filter rejected it) draws the next seed of this fixed
    sequence, so a run with rejections is as deterministic and resumable as one without.
    """
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1, np.uint64)[0]) & MAX_SEED


def _interleave(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels in an order that spreads every class evenly over the split, and each image's rank within its class.

    Image j of class k sorts at (j + 0.5) / count_k: equal counts give round-robin order, so the first images of
    a split (a `--limit` preview, the first shard) hold every class.
    """
    labels = np.repeat(np.arange(len(counts)), counts)
    ranks = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, dtype=int)
    keys = (ranks + 0.5) / np.maximum(np.repeat(counts, counts), 1)
    order = np.lexsort((labels, keys))
    return labels[order], ranks[order]


@dataclass(frozen=True)
class SplitPlan:
    """The jobs of one split, stored column by column."""

    recipe: Recipe
    split: str
    labels: np.ndarray
    attribute_codes: dict[str, np.ndarray]
    templates: np.ndarray
    guidance: np.ndarray
    seeds: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def _class_texts(self) -> list[str]:
        return [c.text for c in self.recipe.classes]

    def job(self, index: int) -> ImageJob:
        recipe = self.recipe
        attributes = {name: spec.values[self.attribute_codes[name][index]] for name, spec in recipe.attributes.items()}
        label = int(self.labels[index])
        template = recipe.prompts.templates[self.templates[index]]
        return ImageJob(
            split=self.split,
            index=index,
            label=label,
            attributes=attributes,
            prompt=fill_template(template, self._class_texts[label], attributes),
            negative_prompt=recipe.negative_prompt(template, attributes),
            guidance_scale=recipe.generation.guidance_scales[self.guidance[index]],
            num_inference_steps=recipe.generation.num_inference_steps,
            seed=int(self.seeds[index]),
        )

    def jobs(self, start: int, stop: int) -> list[ImageJob]:
        return [self.job(i) for i in range(start, min(stop, len(self)))]


def plan_split(recipe: Recipe, split: str, limit: int | None = None) -> SplitPlan:
    """Plan one split; `limit` keeps its first `limit` images (the same images a full run makes first)."""
    base = recipe.generation.seed
    labels, ranks = _interleave(recipe.class_counts(split))
    if limit is not None:
        labels, ranks = labels[:limit], ranks[:limit]
    n = len(labels)
    codes = _attribute_codes(recipe, split, labels, ranks)
    return SplitPlan(
        recipe=recipe,
        split=split,
        labels=labels,
        attribute_codes=codes,
        templates=_stream(base, split, "template").integers(len(recipe.prompts.templates), size=n),
        guidance=_stream(base, split, "guidance_scale").integers(len(recipe.generation.guidance_scales), size=n),
        seeds=_stream(base, split, "seed").integers(0, MAX_SEED, size=n, dtype=np.int64, endpoint=True),
    )


def _attribute_codes(recipe: Recipe, split: str, labels: np.ndarray, ranks: np.ndarray) -> dict[str, np.ndarray]:
    base = recipe.generation.seed
    specs = recipe.attributes
    if recipe.splits[split].attributes == "weighted":
        codes = {}
        for name, spec in specs.items():
            weights = np.asarray(spec.weights if spec.weights is not None else [1.0] * len(spec.values), dtype=float)
            codes[name] = _stream(base, split, f"attribute:{name}").choice(len(spec.values), size=len(labels), p=weights / weights.sum())
            # Classes with their own weights draw from their own stream, indexed by their rank within the class, so
            # an image's value depends on (seed, split, attribute, class, rank) only, like everything else here.
            for k, class_spec in enumerate(recipe.classes):
                if name not in (class_spec.attributes or {}):
                    continue
                members = np.flatnonzero(labels == k)
                if len(members):
                    own = np.asarray(recipe.attribute_weights(k, name))
                    draws = _stream(base, split, f"attribute:{name}:class:{class_spec.name}").choice(len(spec.values), size=int(ranks[members].max()) + 1, p=own / own.sum())
                    codes[name][members] = draws[ranks[members]]
        return codes
    # Balanced: class k's j-th image takes combination perm_k[j mod M], perm_k a shuffle of all M combinations.
    sizes = [len(spec.values) for spec in specs.values()]
    combinations = int(np.prod(sizes)) if sizes else 1
    combo = np.zeros(len(labels), dtype=np.int64)
    for k in range(len(recipe.classes)):
        members = labels == k
        permutation = _stream(base, split, f"combinations:{k}").permutation(combinations)
        combo[members] = permutation[ranks[members] % combinations]
    codes = {}
    for name, size in zip(reversed(list(specs)), reversed(sizes)):  # mixed-radix decode, last attribute fastest
        codes[name], combo = combo % size, combo // size
    return {name: codes[name] for name in specs}


def expected_table(recipe: Recipe, split: str, name: str) -> dict[tuple[str, str], float]:
    """The share of `split` each (class, value of attribute `name`) should have under `weighted` sampling: the
    class's share of the split times the value's share of the class's weights."""
    counts = recipe.class_counts(split)
    total = sum(counts) or 1
    table = {}
    for k, spec in enumerate(recipe.classes):
        weights = recipe.attribute_weights(k, name)
        for value, weight in zip(recipe.attributes[name].values, weights):
            if weight > 0:
                table[(spec.name, value)] = counts[k] / total * weight / sum(weights)
    return table


def total_variation(p: dict, q: dict) -> float:
    """Half the L1 distance between two distributions given as {key: share} (0: identical, 1: disjoint)."""
    return 0.5 * sum(abs(p.get(key, 0.0) - q.get(key, 0.0)) for key in set(p) | set(q))


def sampling_noise(p: dict, n: int) -> float:
    """The total-variation distance a sample of `n` draws from `p` is expected to show from `p` itself (normal
    approximation, sum of E|x - np| / n over cells): the yardstick for "within sampling noise"."""
    return 0.5 * sum(float(np.sqrt(2 * share * (1 - share) / (np.pi * n))) for share in p.values()) if n else 0.0


def joint_fit(recipe: Recipe, split: str, rows: dict[str, list] | None = None) -> dict[str, dict]:
    """How close a split's class x attribute tables are to what the recipe asks for, for each attribute that some
    class weights on its own: {attribute: {"distance", "noise", "images"}} (total variation, and what a random
    sample of that size would show). `rows` are the split's columns ({"label": class names, attribute: values});
    by default the planned split, so a twin can be checked before an image is made."""
    names = [name for name in recipe.attributes if any(name in (c.attributes or {}) for c in recipe.classes)]
    if rows is None:
        planned = plan_split(recipe, split)
        rows = {"label": [recipe.label_names[k] for k in planned.labels],
                **{name: [recipe.attributes[name].values[c] for c in planned.attribute_codes[name]] for name in names}}
    fit = {}
    for name in names:
        pairs = [(label, value) for label, value in zip(rows["label"], rows[name]) if value is not None]
        if not pairs:
            continue
        observed = {key: count / len(pairs) for key, count in Counter(pairs).items()}
        expected = expected_table(recipe, split, name)
        fit[name] = {"distance": round(total_variation(expected, observed), 4), "noise": round(sampling_noise(expected, len(pairs)), 4), "images": len(pairs)}
    return fit


def plan(recipe: Recipe, limit: int | None = None) -> dict[str, SplitPlan]:
    """Plan every split of the recipe, in recipe order."""
    return {split: plan_split(recipe, split, limit) for split in recipe.splits}
