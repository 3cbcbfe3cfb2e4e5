"""Finished runs and their keys: what lets a benchmark started again reuse the runs it already trained.

Each (arm, seed) run is saved under `DIR/runs/{arm}-seed{seed}.json` as it ends, with its key: what it was trained
and tested on (each dataset's content, the classifier's weights, the arm, seed, sampled rows and training settings).
A run is reused only under the same key; when the key changed, the log names the parts that did (`changed_parts`).
Kept apart from the runner so that what makes two runs the same can be read in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..shards import atomic_write_json
from .arms import ArmSample

if TYPE_CHECKING:
    from .train import RunResult

logger = logging.getLogger(__name__)

KEY_PARTS = {  # a run key's parts, as the log names them when one changed
    "arm": "the arm's counts", "seed": "the seed", "real": "the real dataset", "synthetic": "the synthetic dataset",
    "classifier": "the classifier (--model, --revision or its files)", "training": "the training settings or device",
    "sample": "the sampled training rows (labels, --label-map or --allow-fewer)", "external": "the --test-dataset sets",
}


def run_key(**parts) -> dict:
    """A run's key: its parts (readable; a log names those that changed) and one `digest` over them all."""
    return {**parts, "digest": hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]}


def changed_parts(saved: dict, key: dict) -> list[str]:
    """The parts of `key` that differ from a saved key's, as `KEY_PARTS` names them."""
    return [KEY_PARTS[name] for name in KEY_PARTS if saved.get(name) != key[name]]


def sample_digest(sample: ArmSample) -> str:
    """sha256 of an arm's chosen rows and their labels, in both sources."""
    parts = (sample.real_rows, sample.real_labels, sample.synthetic_rows, sample.synthetic_labels)
    return hashlib.sha256(json.dumps([np.asarray(p).tolist() for p in parts]).encode()).hexdigest()


@dataclass(frozen=True)
class Inputs:
    """The keys of what every run reads: each dataset's content (`data.dataset_key`) and the classifier's weights."""

    real: dict
    synthetic: list[dict]
    classifier: dict
    external: dict[str, dict]  # name -> key of each --test-dataset


def run_path(out: Path, condition: str, seed: int) -> Path:
    return out / "runs" / f"{condition}-seed{seed}.json"


def note_unkeyed_runs(out: Path) -> None:
    """Say once that the runs an older skinsynth saved (without keys) cannot be reused."""
    old = [path.name for path in sorted((out / "runs").glob("*.json")) if "key" not in json.loads(path.read_text())]
    if old:
        logger.warning("%d finished runs in %s were saved without a key by an older skinsynth (%s): they are trained again", len(old), out / "runs",
                       ", ".join(old[:3]) + (", …" if len(old) > 3 else ""))


def load_done(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def result_from(saved: dict) -> RunResult:
    from .train import RunResult

    return RunResult(
        np.asarray(saved["test_scores"], dtype=np.float32), np.asarray(saved["test_labels"]), saved["epochs_run"], saved["best_epoch"],
        saved["best_val_top1"], saved["history"], saved["seconds"], saved["data_wait_share"], saved["images_per_second"], saved.get("best_val", {}),
        {name: np.asarray(scores, dtype=np.float32) for name, scores in saved.get("external_scores", {}).items()},
    )


def save_done(path: Path, key: dict, result: RunResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {
        "key": key, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "best_val_top1": result.best_val_top1,
        "best_val": result.best_val, "history": result.history, "seconds": result.seconds, "data_wait_share": result.data_wait_share,
        "images_per_second": result.images_per_second,
        "test_labels": result.test_labels.tolist(), "test_scores": result.test_scores.tolist(),
        "external_scores": {name: scores.tolist() for name, scores in result.external_scores.items()},
    })
