"""Keep only generated images that are what their labels say.

Three checks, cheapest first:

1. degenerate images (safety-checker flags, constant or all-black images, NaN/inf decodes): `generate`'s own
   `skinsynth.images.rejection_reason`, so generation and post-hoc filtering reject exactly the same things;
2. label fidelity: a classifier trained on real data (or an ensemble, probabilities averaged) must give the
   intended class a probability at least the class's threshold: by default the classifier's mean confidence on
   real images of that class ("confident thresholds", as in cleanlab and ALIA), so a synthetic image passes when
   the classifier is about as sure of it as of a typical real one. An optional upper bound drops images that are
   too easy to be informative;
3. optionally CLIP: the class prompt must score higher than each decoy prompt ("a photo", "an image", ...).

`ImageFilter` is used in two places: inside `generate` (a rejected image is retried with the next seed of its
fixed sequence, so every class and attribute cell still reaches its count, deterministically) and by
`filter_dataset` (a new dataset with the rows that pass). Scores become columns; counts per reason go to the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..benchmark.arms import label_key
from ..data import label_names, open_dataset
from ..errors import DatasetError, OutputError, PipelineError, SkinsynthError
from ..images import rejection_reason
from ..paths import model_record_paths, portable_reference, resolved_from
from ..shards import atomic_write_json, read_manifest, splits_manifest, write_split
from .features import image_batches, load_image_model, torch_device

DECOYS = ("a photo", "an image", "text", "a drawing")
LOW, HIGH, CLIP = "label_confidence_low", "label_confidence_high", "clip_decoy"
SCORE_COLUMN, CLIP_COLUMN = "filter_score", "clip_margin"

Scorer = Callable[[list, np.ndarray], np.ndarray]  # (RGB PIL images, labels) -> one score per image


@dataclass(frozen=True)
class FilterConfig:
    """What `--filter-*` / `skinsynth filter` options ask for; checked before any model loads.

    `threshold` None means per class: the ensemble's mean confidence on the real images of that class, from the
    `real_split` of `real`.
    """

    classifiers: tuple[str, ...] = ()
    threshold: float | None = None
    upper: float | None = None
    real: str | None = None
    real_split: str = "validation"
    clip: str | None = None

    def __post_init__(self):
        for name in ("threshold", "upper"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise SkinsynthError(f"`--{name}` is a probability between 0 and 1, got {value}")
        if self.threshold is not None and self.upper is not None and self.upper <= self.threshold:
            raise SkinsynthError(f"`--upper` ({self.upper}) must be above `--threshold` ({self.threshold}), or no image can pass")
        if self.threshold is None and self.real is None and self.classifiers:
            raise SkinsynthError("the per-class thresholds are the classifier's mean confidence on real images: give the real dataset (`--real`) or a fixed `--threshold`")


def classifier_folders(classifiers: tuple[str, ...] | list[str]) -> list[str]:
    """Each `--classifier` as model folders or Hub ids: a local folder without a config.json that holds model
    folders (a benchmark arm's `BENCH/models/ARM/`, one folder per seed) stands for all of them, an ensemble."""
    folders = []
    for classifier in classifiers:
        local = Path(classifier).expanduser()
        if local.is_dir() and not (local / "config.json").is_file():
            members = sorted(str(sub) for sub in local.iterdir() if sub.is_dir() and (sub / "config.json").is_file())
            if not members:
                raise SkinsynthError(
                    f"`--classifier {classifier}` holds neither a config.json nor model folders: pass a model folder, a folder of them "
                    "(e.g. a benchmark's BENCH/models/ARM, its seeds as an ensemble) or a Hub id"
                )
            folders += members
        else:
            folders.append(classifier)
    return folders


class ClassifierEnsemble:
    """Mean class probabilities of one or more `AutoModelForImageClassification` checkpoints, as a `Scorer`.

    Classifier outputs are matched to the dataset's classes by name (ignoring case and `_`/`-`/space, as the
    benchmark matches labels), so a checkpoint trained with another label order or spelling still works, and one
    that lacks a class is refused.
    """

    def __init__(self, paths: tuple[str, ...] | list[str], names: list[str], device: str | None = None):
        if not paths:
            raise SkinsynthError("give at least one classifier (`--classifier DIR`)")
        self.paths = list(paths)
        self.members = []
        for path in self.paths:
            model, processor = load_image_model(path, "AutoModelForImageClassification", device)
            id2label = {int(i): str(label) for i, label in model.config.id2label.items()}
            by_name = {label_key(label): i for i, label in id2label.items()}
            missing = [name for name in names if label_key(name) not in by_name]
            if missing:
                raise SkinsynthError(
                    f"classifier `{path}` does not know the dataset's classes {missing} (its labels: {sorted(by_name)}); "
                    "use a classifier trained on the same class names"
                )
            self.members.append((model, processor, np.array([by_name[label_key(name)] for name in names])))

    def probabilities(self, images: list) -> np.ndarray:
        """(n, num dataset classes): softmax over the classifier's own classes, columns in dataset order, averaged."""
        import torch

        total = 0.0
        for model, processor, columns in self.members:
            inputs = processor(images=images, return_tensors="pt").to(model.device)
            with torch.no_grad():
                probs = model(pixel_values=inputs["pixel_values"]).logits.float().softmax(-1).cpu().numpy()
            total = total + probs[:, columns]
        return total / len(self.members)

    def __call__(self, images: list, labels: np.ndarray) -> np.ndarray:
        return self.probabilities(images)[np.arange(len(images)), labels].astype(np.float32)


class ClipCheck:
    """Margin of the class prompt over the best decoy prompt in CLIP's image-text similarity (> 0 passes)."""

    def __init__(self, model: str, class_texts: list[str], device: str | None = None):
        from transformers import AutoProcessor, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(model).to(torch_device(device)).eval()
            self.processor = AutoProcessor.from_pretrained(model)
        except (OSError, ValueError) as err:
            raise PipelineError(f"could not load a CLIP model from `{model}`: {err}") from err
        self.name = model
        self.texts = [f"a photo of {text}" for text in class_texts] + list(DECOYS)
        self.num_classes = len(class_texts)

    def __call__(self, images: list, labels: np.ndarray) -> np.ndarray:
        import torch

        inputs = self.processor(text=self.texts, images=images, return_tensors="pt", padding=True).to(self.model.device)
        with torch.no_grad():
            logits = self.model(**inputs).logits_per_image.float().cpu().numpy()
        own = logits[np.arange(len(images)), labels]
        return (own - logits[:, self.num_classes :].max(axis=1)).astype(np.float32)


class ImageFilter:
    """Verdicts on candidate images: a rejection reason (or None) and the scores to store as columns."""

    def __init__(self, scorer: Scorer, thresholds: np.ndarray, names: list[str], *, upper: float | None = None,
                 clip: Scorer | None = None, identity: dict | None = None):
        self.scorer = scorer
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        self.names = names
        self.upper = upper
        self.clip = clip
        self.score_columns = (SCORE_COLUMN, CLIP_COLUMN) if clip is not None else (SCORE_COLUMN,)
        self._identity = identity or {}

    def review(self, images: list, labels, reasons: list[str | None]) -> tuple[list[str | None], list[dict]]:
        """Check the images that no earlier check rejected (`reasons[i] is None`); returns updated reasons and
        each image's scores (NaN for images that were not scored)."""
        reasons = list(reasons)
        scores = [dict.fromkeys(self.score_columns, float("nan")) for _ in images]
        todo = [i for i, reason in enumerate(reasons) if reason is None]
        if not todo:
            return reasons, scores
        labels = np.asarray(labels)[todo]
        batch = [images[i] for i in todo]
        confidence = self.scorer(batch, labels)
        margins = self.clip(batch, labels) if self.clip is not None else None
        for n, i in enumerate(todo):
            scores[i][SCORE_COLUMN] = float(confidence[n])
            if confidence[n] < self.thresholds[labels[n]]:
                reasons[i] = LOW
            elif self.upper is not None and confidence[n] > self.upper:
                reasons[i] = HIGH
            if margins is not None:
                scores[i][CLIP_COLUMN] = float(margins[n])
                if reasons[i] is None and margins[n] <= 0:
                    reasons[i] = CLIP
        return reasons, scores

    def summary(self, relative_to: str | Path | None = None) -> dict:
        """What a manifest records: the classifiers (local ones relative to `relative_to`, the folder the record is
        written into), the per-class thresholds actually used, the upper bound, CLIP."""
        identity = self._identity
        if relative_to is not None and "classifiers" in identity:
            identity = {**identity, "classifiers": [{**c, "path": portable_reference(c["path"], relative_to)} for c in identity["classifiers"]],
                        "real": portable_reference(identity.get("real"), relative_to)}
        return {**identity, "thresholds": {name: round(float(t), 6) for name, t in zip(self.names, self.thresholds)}, "upper": self.upper}


class FilterChain:
    """Several filters as one, in order: each reviews the images no earlier one rejected (cheapest first), and the rows
    get all their score columns. `generate` chains the classifier filter and the copy filter this way."""

    def __init__(self, *filters):
        self.filters = [f for f in filters if f is not None]
        self.score_columns = tuple(column for f in self.filters for column in f.score_columns)

    def review(self, images: list, labels, reasons: list[str | None]) -> tuple[list[str | None], list[dict]]:
        scores = [{} for _ in images]
        for image_filter in self.filters:
            reasons, more = image_filter.review(images, labels, reasons)
            for row, extra in zip(scores, more):
                row.update(extra)
        return reasons, scores


def class_thresholds(scorer: Scorer, real_split, names: list[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Per class, the mean score the scorer gives real images of that class (labels matched to `names` by name)."""
    from tqdm.auto import tqdm

    real_names = label_names(real_split)
    missing = [name for name in names if name not in real_names]
    if missing:
        raise DatasetError(f"the real dataset has no images of {missing} (its classes: {real_names}) to set their thresholds; give --threshold")
    to_ours = np.array([names.index(n) if n in names else -1 for n in real_names])
    labels = to_ours[np.asarray(real_split["label"], dtype=int)]
    keep = np.flatnonzero(labels >= 0)
    part, labels = real_split.select(keep.tolist()), labels[keep]
    scores = np.empty(len(part), dtype=np.float32)
    with tqdm(total=len(part), unit="img", desc="thresholds: real images", disable=not progress) as bar:
        for start, batch in zip(range(0, len(part), batch_size), image_batches(part, batch_size)):
            scores[start : start + len(batch)] = scorer(batch, labels[start : start + len(batch)])
            bar.update(len(batch))
    empty = [name for k, name in enumerate(names) if not (labels == k).any()]
    if empty:
        raise DatasetError(f"the real split has no images of {empty} to set their thresholds; give --threshold")
    return np.array([scores[labels == k].mean() for k in range(len(names))], dtype=np.float32)


def build_filter(config: FilterConfig, names: list[str], class_texts: list[str] | None = None, *, scorer: Scorer | None = None,
                 device: str | None = None, progress: bool = True) -> ImageFilter:
    """Load the classifiers (unless a `scorer` is given), resolve the thresholds and the optional CLIP check."""
    from ..fingerprint import folder_fingerprint

    classifiers = classifier_folders(config.classifiers)
    if scorer is None:
        scorer = ClassifierEnsemble(classifiers, names, device)
    if config.threshold is not None:
        thresholds = np.full(len(names), config.threshold, dtype=np.float32)
        method = "fixed"
    else:
        if config.real is None:
            raise SkinsynthError("the per-class thresholds need real images: give `--real` or a fixed `--threshold`")
        real = open_dataset(config.real, required_splits=(config.real_split,))
        thresholds = class_thresholds(scorer, real[config.real_split], names, progress=progress)
        method = f"mean confidence on real `{config.real_split}` images of each class"
    clip = ClipCheck(config.clip, class_texts or [n.replace("_", " ") for n in names], device) if config.clip else None
    identity = {
        "classifiers": [{"path": p, "fingerprint": folder_fingerprint(p) if Path(p).is_dir() else None} for p in classifiers],
        "threshold_method": method,
        "real": config.real if config.threshold is None else None,
        "clip": config.clip,
        "decoys": list(DECOYS) if config.clip else None,
    }
    return ImageFilter(scorer, thresholds, names, upper=config.upper, clip=clip, identity=identity)


class _KeptRows:
    """The kept rows of a split with their scores, as the sized sequence `write_split` reads (one row at a time)."""

    def __init__(self, raw_split, rows: list[int], scores: list[dict]):
        self.raw, self.rows, self.scores = raw_split, rows, scores

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {**self.raw[self.rows[i]], **self.scores[i]}


def filter_dataset(
    synthetic: str | Path,
    out: str | Path,
    config: FilterConfig,
    *,
    scorer: Scorer | None = None,
    batch_size: int = 32,
    shard_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Write the rows of `synthetic` that pass the filter to a new dataset `out` (same layout, scores as
    columns, counts per reason in its manifest under "filter", its own card); mirrors `skinsynth filter`.
    Returns the manifest.

    The new dataset is written to a hidden folder beside `out` and renamed into place once complete.
    `scorer` replaces the classifier ensemble (any function of (images, labels) -> scores).
    """
    import datasets
    from tqdm.auto import tqdm

    from ..card import write_dataset_card

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"`{out}` already exists and is not empty; choose another --out")
    if scorer is None and not config.classifiers:
        raise SkinsynthError("give at least one classifier (`--classifier DIR`)")
    if batch_size < 1:
        raise SkinsynthError(f"`--batch-size` must be at least 1, got {batch_size}")
    syn = open_dataset(synthetic)
    names = label_names(syn)
    try:  # the new dataset keeps its source's kind of manifest, so its card is built the same way
        manifest_name, manifest = read_manifest(synthetic)
    except DatasetError:  # not made by skinsynth (e.g. a Hub dataset): described by its source, as `prepare` does
        manifest_name, manifest = "prepare.json", {"kind": "real", "source": {"name": str(synthetic), "path": str(synthetic)}}
    recipe = manifest.get("recipe", {})
    texts = {c["name"]: c.get("prompt") or c["name"].replace("_", " ") for c in recipe.get("classes", [])}
    image_filter = build_filter(config, names, [texts.get(n, n.replace("_", " ")) for n in names], scorer=scorer, device=device, progress=progress)
    shard_size = shard_size or recipe.get("generation", {}).get("shard_size") or 1000

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: Counter = Counter()
    infos = {}
    try:
        for split, part in syn.items():
            features = datasets.Features({**part.features, **{c: datasets.Value("float32") for c in image_filter.score_columns}})
            kept, kept_scores = [], []
            all_labels = np.asarray(part["label"], dtype=int)
            with tqdm(total=len(part), unit="img", desc=f"filtering {split}", disable=not progress) as bar:
                for start, images in zip(range(0, len(part), batch_size), image_batches(part, batch_size)):
                    labels = all_labels[start : start + len(images)]
                    reasons = [rejection_reason(np.asarray(image, dtype=np.float32) / 255.0, None) for image in images]
                    reasons, scores = image_filter.review(images, labels, reasons)
                    for offset, (reason, score) in enumerate(zip(reasons, scores)):
                        if reason is None:
                            kept.append(start + offset)
                            kept_scores.append(score)
                        else:
                            counts[reason] += 1
                    bar.update(len(images))
            if len(part) and not kept:
                raise DatasetError(f"no image of the `{split}` split passed the filter (rejected: {dict(counts)}); lower the threshold or check the classifier")
            raw = part.cast_column("image", datasets.Image(decode=False))
            infos[split] = write_split(tmp, split, _KeptRows(raw, kept, kept_scores), features, shard_size)
        moved = resolved_from(synthetic)  # the source's manifest names local paths relative to the source, this one relative to `out`
        result = {
            **{k: v for k, v in manifest.items() if k not in ("splits", "filter")},
            "model": model_record_paths(manifest.get("model") or {}, lambda path: portable_reference(moved(path), out) if moved(path) != path else path),
            "status": "complete",
            "filtered_from": {"dataset": portable_reference(synthetic, out), "splits": manifest.get("splits")},
            "splits": splits_manifest(infos),
            "filter": {**image_filter.summary(relative_to=out), "kept": sum(i.num_rows for s in infos.values() for i in s), "rejections": dict(counts)},
        }
        atomic_write_json(tmp / manifest_name, result)
        write_dataset_card(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads((out / manifest_name).read_text(encoding="utf-8"))
