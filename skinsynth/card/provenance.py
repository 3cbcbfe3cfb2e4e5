"""Where a model's training data came from, as cards describe it: datasets recognised by name (license, citation),
Hub ids told apart from local folders, and the fine-tuned parts of a generating model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownDataset:
    """A training dataset recognised by name in a fine-tuned model's metadata, for its license and citation."""

    name: str
    license: str
    citation: str


KNOWN_DATASETS = {
    "ham10000": KnownDataset(
        "HAM10000",
        "cc-by-nc-sa-4.0",
        """@article{tschandl2018ham10000,
  title   = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}""",
    ),
}


def finetuned_parts(model: dict) -> list[dict]:
    """The fine-tuned parts of a generating model (full pipeline, LoRA, embeddings) and their metadata."""
    parts = [("pipeline", model.get("finetune")), ("LoRA", (model.get("lora") or {}).get("finetune"))]
    parts += [("embeddings", embedding.get("finetune")) for embedding in model.get("embeddings") or []]
    return [{"part": part, **metadata} for part, metadata in parts if metadata]


def known_dataset(training_data) -> KnownDataset | None:
    text = json.dumps(training_data).lower() if not isinstance(training_data, str) else training_data.lower()
    return next((known for key, known in KNOWN_DATASETS.items() if key in text), None)


def hub_id(reference) -> str | None:
    """`reference` (a model or dataset) when it names a Hub repo (owner/name), not a local path: the card's YAML
    links Hub repos only."""
    if isinstance(reference, str) and re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", reference) and not Path(reference).exists():
        return reference
    return None


@dataclass(frozen=True)
class TrainingData:
    """A fine-tuned model's training data, as its card and the cards of datasets it generated describe it."""

    name: str
    source_dataset: str | None  # for `source_datasets` in the YAML
    license: str | None
    citation: str | None


def training_data(metadata: dict) -> TrainingData | None:
    data = metadata.get("training_data")
    if not data:
        return None
    known = known_dataset(data)
    name = known.name if known else (data if isinstance(data, str) else json.dumps(data, sort_keys=True))
    return TrainingData(
        name=name,
        source_dataset=hub_id(data) or (known.name if known else None),
        license=metadata.get("training_license") or (known.license if known else None),
        citation=metadata.get("training_citation") or (known.citation if known else None),
    )


def unique(items):
    return list(dict.fromkeys(item for item in items if item))


def model_training_data(model: dict) -> str | None:
    """The training data a generating model (`ModelInfo.to_dict()`, local paths as loaded) records for its fine-tuned
    parts: the pipeline's own `skinsynth_model.json`, then its LoRA's, then its embeddings'. A model records a local
    dataset relative to its own folder (it travels with it), so such a path is resolved from there."""
    lora = model.get("lora") or {}
    parts = [(model.get("model"), model.get("finetune")), (lora.get("path"), lora.get("finetune")),
             *((e.get("path"), e.get("finetune")) for e in model.get("embeddings") or [])]
    for where, part in parts:
        data = (part or {}).get("training_data")
        if isinstance(data, str):
            folder = Path(where or ".").expanduser()
            folder = folder if folder.is_dir() else folder.parent
            return str(folder / data) if (folder / data).exists() else data
    return None
