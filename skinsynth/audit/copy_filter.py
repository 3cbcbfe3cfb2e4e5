"""Refuse copies while generating: `skinsynth generate … --filter-copies REAL`.

Every image that passes the other checks is scored against the real training images exactly as `audit memorization`
scores a synthetic image (same features, same threshold calibrated on held-out real images of new patients, same
planted-copy recall); one scoring above the threshold is rejected as `copy_of_training_image` and made again with
the next seed of its fixed sequence, like an image the classifier filter rejects. So a dataset made this way holds no
image the audit would flag, and its manifest and card say at which threshold, with which measured false-positive rate
and recall, and how many images per class were remade.

The expensive parts run once: the training images' features (`matching.build_matcher`) and the calibration on
the held-out split are cached under `matching.reference_cache_dir()`, keyed by the content of the splits and the
settings, and reused by every later run and audit. What remains per image is one search (`bench_audit.py` measures it
against the cost of generating the image).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path


from ..card.provenance import hub_id, model_training_data
from ..data import open_dataset
from ..errors import DatasetError, SkinsynthError
from ..paths import portable_reference
from ..shards import atomic_write_json
from .features import ContrastiveConfig, split_digest
from .keypoints import KeypointConfig
from .matching import build_matcher, calibrate, feature_settings, reference_cache_dir, reference_key
from .memorization import HELDOUT_SPLITS

logger = logging.getLogger(__name__)

COPY = "copy_of_training_image"  # the rejection reason
COPY_COLUMN = "copy_score"


@dataclass(frozen=True)
class CopyFilterConfig:
    """What `--filter-copies` asks for; checked before any model loads. `real` None: the generating model's own training
    data, as its `skinsynth_model.json` (or its LoRA's / embeddings') records it."""

    real: str | None = None
    features: str = "keypoints"
    false_positive_rate: float = 0.01
    threshold: float | None = None
    train_split: str = "train"
    heldout_split: str | None = None
    num_planted: int = 200
    seed: int = 0
    keypoints: KeypointConfig = field(default_factory=KeypointConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def __post_init__(self):
        if not 0 < self.false_positive_rate < 0.5:
            raise SkinsynthError(f"`--copies-false-positive-rate` must be between 0 and 0.5, got {self.false_positive_rate}")
        if self.num_planted < 0:
            raise SkinsynthError(f"the number of planted copies must be 0 or more, got {self.num_planted}")


def resolve_real(config: CopyFilterConfig, model: dict) -> str:
    """`config.real`, or the model's own training data; refused when neither names a dataset that exists."""
    if config.real is not None:
        return config.real
    recorded = model_training_data(model)
    if recorded is None:
        raise SkinsynthError(
            f"`--filter-copies` without a dataset uses the model's recorded training data, and `{model.get('model')}` records none "
            "(no skinsynth_model.json in the model, LoRA or embeddings folder); give the real dataset it was trained on: `--filter-copies REAL`"
        )
    if Path(recorded).expanduser().is_dir() or hub_id(recorded):
        return recorded
    raise SkinsynthError(
        f"the model records its training data as `{recorded}`, which is neither a folder here (relative to {Path.cwd()}) nor a Hub "
        "dataset id; give the real dataset it was trained on: `--filter-copies REAL`"
    )


class CopyFilter:
    """Verdicts on candidate images, as `generate`'s `ImageMaker` asks an image filter (`review`, `score_columns`,
    `summary`): an image whose nearest training image scores above the threshold is rejected as `COPY`."""

    score_columns = (COPY_COLUMN,)

    def __init__(self, matcher, calibration: dict, identity: dict):
        self.matcher = matcher
        self.threshold = float(calibration["threshold"])
        self.calibration = calibration
        self._identity = identity

    def review(self, images: list, labels, reasons: list[str | None]) -> tuple[list[str | None], list[dict]]:
        """Score the images no earlier check rejected (`reasons[i] is None`); returns updated reasons and each image's
        score (NaN for images that were not scored)."""
        reasons = list(reasons)
        scores = [{COPY_COLUMN: float("nan")} for _ in images]
        todo = [i for i, reason in enumerate(reasons) if reason is None]
        if todo:
            for i, score in zip(todo, self.matcher.nearest_images([images[i] for i in todo])[0]):
                scores[i][COPY_COLUMN] = float(score)
                if score > self.threshold:
                    reasons[i] = COPY
        return reasons, scores

    def identity(self) -> dict:
        """What decides the verdicts, for `generate`'s resume check (not the dataset's path: the same data elsewhere is the same filter)."""
        return {key: value for key, value in self.summary().items() if key in ("reference_sha256", "train_split", "features", "settings", "threshold")}

    def summary(self, relative_to: str | Path | None = None) -> dict:
        """What the manifest and the card record: the searched set (a local one named relative to `relative_to`, the
        folder the record is written into), the threshold and how good it is."""
        c = self.calibration
        real = self._identity["real"] if relative_to is None else portable_reference(self._identity["real"], relative_to)
        return {**self._identity, "real": real, "threshold": round(self.threshold, 6), "threshold_method": c["threshold_method"],
                "false_positive_rate": c["false_positive_rate"], "planted_copy_recall": c["planted_copy_recall"], "rows": c["rows"]}


def _calibration_file(folder: Path, heldout, heldout_split: str, config: CopyFilterConfig) -> Path:
    key = {"heldout": split_digest(heldout), "heldout_split": heldout_split, "train_split": config.train_split, "threshold": config.threshold,
           "false_positive_rate": config.false_positive_rate, "num_planted": config.num_planted, "seed": config.seed}
    return folder / f"calibration-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"


def build_copy_filter(config: CopyFilterConfig, model: dict | None = None, *, device: str | None = None, cache: bool = True,
                      progress: bool = True) -> CopyFilter:
    """Load the real dataset (`config.real`, or the training data `model` records), the training images' matcher and the
    calibration, from the cache when an earlier run or audit computed them (`cache=False`: computed afresh)."""
    real_path = resolve_real(config, model or {})
    real = open_dataset(real_path, required_splits=(config.train_split,) + ((config.heldout_split,) if config.heldout_split else ()))
    heldout_split = config.heldout_split or next((s for s in HELDOUT_SPLITS if len(real.get(s, ()))), None)
    if heldout_split is None:
        raise DatasetError(f"the copy filter sets its threshold on held-out real images, and `{real_path}` has no non-empty "
                           f"{' or '.join(HELDOUT_SPLITS)} split; give one (`heldout_split`)")
    reference, heldout = real[config.train_split], real[heldout_split]
    if len(reference) == 0:
        raise DatasetError(f"the real `{config.train_split}` split of `{real_path}` is empty: there is nothing to compare with")
    reference_sha256 = split_digest(reference)
    matcher = build_matcher(reference, config.features, device=device, contrastive=config.contrastive, keypoints=config.keypoints,
                            cache=cache, reference_sha256=reference_sha256, progress=progress)
    settings = feature_settings(config.features, config.keypoints, config.contrastive)
    folder = reference_cache_dir() / reference_key(reference_sha256, config.features, settings)
    saved = _calibration_file(folder, heldout, heldout_split, config) if cache else None
    if saved is not None and saved.is_file():
        logger.info("using the copy threshold calibrated in %s", saved)
        calibration = json.loads(saved.read_text(encoding="utf-8"))
    else:
        calibration = calibrate(matcher, reference, heldout, train_split=config.train_split, heldout_split=heldout_split,
                                false_positive_rate=config.false_positive_rate, threshold=config.threshold, num_planted=config.num_planted,
                                seed=config.seed, progress=progress)
        if saved is not None:
            atomic_write_json(saved, calibration)
    identity = {"real": str(real_path), "train_split": config.train_split, "num_train": len(reference), "heldout_split": heldout_split,
                "features": matcher.name, "score": matcher.score, "reference_sha256": reference_sha256,
                "settings": asdict(settings) if settings is not None else None}
    return CopyFilter(matcher, calibration, identity)
