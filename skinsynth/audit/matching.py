"""The core that `audit memorization` and `generate --filter-copies` share: score each image against its nearest
training image (keypoints or an embedding), cached once per (training images, feature, settings); set the threshold
on held-out real images (new patients), and measure it with planted copies of training images."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError, SkinsynthError
from .copies import STRENGTHS, plant_copy
from .features import ContrastiveConfig, l2_normalize, load_extractor, torch_device
from .keypoints import KeypointConfig, KeypointMatcher
from .neighbors import knn
from .stats import conformal_threshold, wilson_interval

logger = logging.getLogger(__name__)


def groups_of(split) -> np.ndarray:
    """The `group_id` of every row (lesion / patient), or the row itself when the dataset has no groups."""
    if "group_id" in split.column_names:
        return np.asarray(split["group_id"], dtype=object)
    return np.asarray([f"row-{i}" for i in range(len(split))], dtype=object)


def halves_by_group(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves with no group in both (seeded): calibration and measurement."""
    unique = np.unique(groups)
    chosen = set(np.random.default_rng(seed).permutation(unique)[: len(unique) // 2])
    first = np.asarray([g in chosen for g in groups], dtype=bool)
    return np.flatnonzero(first), np.flatnonzero(~first)


def flag_copies(similarities: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose nearest training image is more similar than the threshold."""
    return np.flatnonzero(similarities > threshold)


def share(k: int, n: int) -> dict:
    """A proportion with its 95 % Wilson interval and its counts."""
    low, high = wilson_interval(k, n)
    return {"value": k / n if n else None, "ci95": [round(low, 6), round(high, 6)], "count": int(k), "n": int(n)}


class EmbeddingMatcher:
    """Nearest training image by cosine similarity of `extractor`'s features (exact search, `neighbors.knn`)."""

    score = "cosine similarity of the image's features to its nearest training image's"

    def __init__(self, extractor, reference, backend: str, device: str | None, progress: bool, train_features: np.ndarray | None = None):
        self.name, self.extractor, self.backend, self.device = extractor.name, extractor, backend, device
        self.label = f"cosine similarity ({extractor.name})"
        if train_features is None:  # else computed by an earlier run (`build_matcher`'s cache)
            train_features = l2_normalize(extractor.extract(reference, desc="features: real train", progress=progress))
        self.train_features = train_features

    def nearest(self, split, desc: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        return self._search(self.extractor.extract(split, desc=desc, progress=progress))

    def nearest_images(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        """`nearest` for a list of RGB PIL images (what `generate --filter-copies` checks)."""
        return self._search(self.extractor.embed(images))

    def _search(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = knn(l2_normalize(features), self.train_features, 1, backend=self.backend, device=self.device)
        return sims[:, 0], idx[:, 0]


def nearest_training(matcher, split, desc: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    if len(split) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    return matcher.nearest(split, desc, progress)


def planted_copies(train_split, rows: np.ndarray, strength: str, seed: int):
    """A dataset of altered copies of the training `rows` (seeded, see `copies.plant_copy`)."""
    import datasets

    rng = np.random.default_rng([seed, STRENGTHS.index(strength)])
    images = [plant_copy(image, rng, strength) for image in train_split.select(rows.tolist())["image"]]
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def reference_cache_dir() -> Path:
    """`$SKINSYNTH_CACHE/copy-check` (default `~/.cache/skinsynth/copy-check`): the training images' features and the
    calibration, per (training split content, features, settings). Beside the model fingerprints rather than in the
    real dataset's folder: that folder may be read-only or a Hub id, and the key is the content, not the path."""
    from ..fingerprint import fingerprint_cache_dir

    return fingerprint_cache_dir().parent / "copy-check"


def reference_key(reference_sha256: str, features: str, settings) -> str:
    """The cache folder name of a training split's features: its images' sha256 (`features.split_digest`), the features
    and their settings."""
    from dataclasses import asdict

    key = {"reference": reference_sha256, "features": features, "settings": asdict(settings) if settings is not None else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def feature_settings(features: str, keypoints: KeypointConfig, contrastive: ContrastiveConfig):
    """The settings that change a matcher's scores: the keypoint or contrastive config; None for a pretrained model."""
    return keypoints if features == "keypoints" else contrastive if features == "contrastive" else None


def build_matcher(reference, features: str, *, backend: str = "auto", device: str | None = None,
                  contrastive: ContrastiveConfig = ContrastiveConfig(), keypoints: KeypointConfig = KeypointConfig(),
                  encoder_dir: str | Path | None = None, cache: bool = True, reference_sha256: str | None = None, progress: bool = True):
    """The matcher that finds each image's nearest image of `reference` (the real training split), with the training
    images' features computed once per (split content, `features`, settings) and reused from `reference_cache_dir()`
    by every later audit and `generate --filter-copies` (`cache=False`: computed afresh, nothing written).

    A `contrastive` encoder is trained and kept in the same cache folder, so that the cached features are its own;
    `encoder_dir` is where it goes with `cache=False`. `reference_sha256`: the split's digest, when the caller has it."""
    from .features import split_digest

    settings = feature_settings(features, keypoints, contrastive)
    folder = reference_cache_dir() / reference_key(reference_sha256 or split_digest(reference), features, settings) if cache else None
    if features == "keypoints":
        if folder is not None and KeypointMatcher.is_saved(folder):
            logger.info("using the training keypoints cached in %s", folder)
            return KeypointMatcher.load(folder, keypoints)
        matcher = KeypointMatcher(reference, keypoints, progress)
        if folder is not None:
            matcher.save(folder)
        return matcher
    if backend == "auto":  # the search runs where the features are computed
        backend = "numpy" if torch_device(device) == "cpu" else "torch"
    encoder_dir = folder or encoder_dir
    if encoder_dir is None:
        raise SkinsynthError(f"the `{features}` features need a folder to cache their encoder in")
    extractor = load_extractor(features, train_split=reference, cache_dir=encoder_dir, device=device, contrastive=contrastive, progress=progress)
    saved = folder / "train_features.npy" if folder is not None else None
    if saved is not None and saved.is_file():
        logger.info("using the training features cached in %s", folder)
        return EmbeddingMatcher(extractor, reference, backend, device, progress, train_features=np.load(saved))
    matcher = EmbeddingMatcher(extractor, reference, backend, device, progress)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.save(saved.with_suffix(".tmp.npy"), matcher.train_features)
        os.replace(saved.with_suffix(".tmp.npy"), saved)
    return matcher


def calibrate(matcher, reference, heldout, *, train_split: str, heldout_split: str, false_positive_rate: float = 0.01, threshold: float | None = None,
              num_planted: int = 200, seed: int = 0, progress: bool = True) -> dict:
    """Steps 1 and 3 of the module docstring, which depend on the real data only, never on a synthetic image: the
    threshold (set on one half of the new groups of `heldout`, or fixed), the false-positive rate measured on the
    other half, the held-out images above it, and the planted-copy recall. A JSON-able dict (`baseline`: the
    measurement half's scores), so `generate --filter-copies` can cache it and record it."""
    train_groups = groups_of(reference)
    # held-out images of a group the training split holds are not new patients: left out of calibration
    heldout_groups = groups_of(heldout)
    new = np.flatnonzero(~np.isin(heldout_groups, np.unique(train_groups))) if "group_id" in heldout.column_names else np.arange(len(heldout))
    null_sims, null_idx = nearest_training(matcher, heldout.select(new.tolist()), f"{matcher.name}: real {heldout_split}", progress)
    calibration, measurement = halves_by_group(heldout_groups[new], seed)
    if len(calibration) == 0 or len(measurement) == 0:
        raise DatasetError(f"the real `{heldout_split}` split has {len(new)} images of new groups; the audit needs at least two groups to calibrate and measure")
    if threshold is None:
        threshold, exact = conformal_threshold(null_sims[calibration], false_positive_rate)
        method = (f"split-conformal {1 - false_positive_rate:.4g} quantile of {len(calibration)} held-out real `{heldout_split}` images' "
                  f"nearest-training similarity (nominal false-positive rate ≤ {false_positive_rate:g})")
        if not exact:
            method += f"; too few images for that rate, so the largest of them (the rate can exceed {false_positive_rate:g})"
    else:
        method = "fixed"
    half = np.where(np.isin(np.arange(len(new)), measurement), "measurement", "calibration")
    heldout_flagged = sorted(
        ({"row": int(new[r]), "half": str(half[r]), "group": str(heldout_groups[new[r]]), "nearest_train_row": int(null_idx[r]),
          "nearest_group": str(train_groups[null_idx[r]]), "similarity": round(float(null_sims[r]), 6)} for r in flag_copies(null_sims, threshold)),
        key=lambda f: -f["similarity"])

    recall = {}
    planted_rows = np.sort(np.random.default_rng(seed).choice(len(reference), min(num_planted, len(reference)), replace=False))
    for strength in STRENGTHS if num_planted else ():
        copies = planted_copies(reference, planted_rows, strength, seed)
        sims, idx = nearest_training(matcher, copies, f"{matcher.name}: planted {strength} copies", progress)
        hits = (sims > threshold) & (train_groups[idx] == train_groups[planted_rows])
        recall[strength] = share(int(hits.sum()), len(hits))
    return {
        "threshold": float(threshold),
        "threshold_method": method,
        "nominal_false_positive_rate": false_positive_rate if method != "fixed" else None,
        "false_positive_rate": share(len(flag_copies(null_sims[measurement], threshold)), len(measurement)),
        "planted_copy_recall": recall,
        "heldout_flagged": heldout_flagged,
        "baseline": [float(x) for x in null_sims[measurement]],
        "rows": {
            "calibration": f"{len(calibration)} rows of real `{heldout_split}` ({len(np.unique(heldout_groups[new][calibration]))} groups) set the threshold",
            "measurement": f"{len(measurement)} other rows of real `{heldout_split}` ({len(np.unique(heldout_groups[new][measurement]))} groups) measure the false-positive rate",
            "left_out": f"{len(heldout) - len(new)} rows of real `{heldout_split}` whose group is also in `{train_split}`",
            "planted": f"{len(planted_rows)} rows of real `{train_split}` (seed {seed}), each altered once per strength ({', '.join(recall)})",
        },
    }
