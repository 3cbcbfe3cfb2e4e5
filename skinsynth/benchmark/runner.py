"""The runner: each (condition, seed) run trained, or its finished result reused, and its model folder saved.

`Runner` holds everything a run needs once the benchmark has checked its inputs; `run_condition` runs every seed
of one condition and, with `--save-models best`, keeps only the best seed's model folder. Whether a finished run
is reused is decided by its key (`runs`); training itself is `train.train_and_predict`.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import export
from .arms import ArmSample
from .conditions import Condition, short_name
from .runs import Inputs, changed_parts, load_done, result_from, run_key, run_path, sample_digest, save_done

if TYPE_CHECKING:
    from .train import RunResult

logger = logging.getLogger(__name__)


@dataclass
class Runner:
    """Everything one (condition, seed) run needs: trains it, or reuses its finished result, and saves its model."""

    real: str
    synthetic: list[str]
    model: str
    revision: str | None
    inputs: Inputs
    class_names: list[str]
    real_data: object
    synthetic_splits: list
    samples: dict
    config: object
    norm: object
    accelerator: object
    val_set: object
    test_set: object
    out: Path
    settings: dict
    license: str | None
    progress: bool
    external: dict = field(default_factory=dict)  # name -> ImageRows of an external test set

    def key(self, condition: Condition, seed: int) -> dict:
        """What the run is trained and tested on; a finished run is reused only under the same key."""
        return run_key(
            arm=condition.arm.model_dump(exclude_none=True), seed=seed, real=self.inputs.real,
            synthetic=None if condition.synthetic is None else self.inputs.synthetic[condition.synthetic], classifier=self.inputs.classifier,
            training={**{k: v for k, v in asdict(self.config).items() if k != "workers"}, "device": str(self.accelerator.device),
                      "processes": self.accelerator.num_processes},
            sample=sample_digest(self.samples[(condition.name, seed)]), external=self.inputs.external,
        )

    def model_saved(self, condition: Condition, seed: int) -> bool:
        """Whether the run's model folder was saved under its current key."""
        return export.saved_key(export.model_folder(self.out, condition.name, seed)) == self.key(condition, seed)["digest"]

    def finished(self, condition: Condition, seed: int, need_model: bool) -> RunResult | None:
        """The run's earlier result if it was made under the same key (and, if `need_model`, its model folder was
        saved under it too), else None; the log says which, and what changed."""
        key, name = self.key(condition, seed), f"{condition.name} seed {seed}"
        saved = load_done(run_path(self.out, condition.name, seed))
        if saved is None or "key" not in saved:  # never run, or by an older skinsynth (`runs.note_unkeyed_runs` said so)
            return None
        changed = changed_parts(saved["key"], key)
        if changed:
            logger.info("%s: training again: %s changed since it ran (key %s -> %s)", name, ", ".join(changed), saved["key"].get("digest"), key["digest"])
            return None
        if need_model and not self.model_saved(condition, seed):
            logger.info("%s: done before, but its model was not saved under key %s: training it again", name, key["digest"])
            return None
        logger.info("%s: reusing its finished run (same data, classifier and settings: key %s)", name, key["digest"])
        return result_from(saved)

    def train(self, condition: Condition, seed: int, save_model: bool) -> RunResult:
        from .classifier import load_classifier
        from .train import ImageRows, train_and_predict

        sample = self.samples[(condition.name, seed)]
        parts = [(self.real_data["train"], sample.real_rows, sample.real_labels)]
        if condition.synthetic is not None:
            parts.append((self.synthetic_splits[condition.synthetic], sample.synthetic_rows, sample.synthetic_labels))
        train_set = ImageRows(parts, self.config.image_size, self.norm, train=True, seed=seed)
        result = train_and_predict(lambda: load_classifier(self.model, self.class_names, self.revision), train_set, self.val_set, self.test_set,
                                   self.config, seed, self.accelerator, progress_desc=f"{condition.name} seed {seed} ({len(train_set)} images)",
                                   progress=self.progress, external=self.external)
        if self.accelerator.is_main_process:
            key = self.key(condition, seed)
            if save_model:
                self.save_model(condition, seed, key, sample, result)
            save_done(run_path(self.out, condition.name, seed), key, result)
        result.model = None
        return result

    def save_model(self, condition: Condition, seed: int, key: dict, sample: ArmSample, result: RunResult) -> None:
        from .metrics import SUMMARY_METRICS, evaluate

        test = evaluate(result.test_labels, result.test_scores, self.class_names)
        run = {
            "key": key, "arm": condition.name, "seed": seed, "classes": self.class_names,
            "synthetic_dataset": None if condition.synthetic is None else self.synthetic[condition.synthetic],
            "real_images": len(sample.real_rows), "synthetic_images": len(sample.synthetic_rows),
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "validation": result.best_val,
            "test": {k: test[k] for k in SUMMARY_METRICS}, "test_images": len(result.test_labels),
        }
        name = f"{condition.name}-seed{seed}"
        card = export.model_card(name, run, self.settings, self.license, short_name(self.real), self.real)
        processor = export.image_processor(self.norm.mean, self.norm.std, self.config.image_size)
        export.save_classifier(export.model_folder(self.out, condition.name, seed), result.model, processor, card, run)


def _best_seed(results: list[tuple[int, RunResult]], select_by: str) -> int:
    sign = -1.0 if select_by == "loss" else 1.0
    return max(results, key=lambda pair: sign * pair[1].best_val.get(select_by, -math.inf * sign))[0]


def run_condition(runner: Runner, condition: Condition, seeds: int, save_models: str) -> list[tuple[int, RunResult]]:
    """Every seed of one condition; then, with `--save-models best`, only the best seed's model folder is kept."""
    keep = save_models == "all" or (save_models == "real" and condition.synthetic is None)
    results = []
    for seed in range(seeds):
        result = runner.finished(condition, seed, need_model=keep)
        if result is None:
            result = runner.train(condition, seed, save_model=keep or save_models == "best")
        results.append((seed, result))
    if save_models == "best":
        best = _best_seed(results, runner.config.select_by)
        if runner.accelerator.is_main_process:
            for seed, _ in results:
                if seed != best:
                    shutil.rmtree(export.model_folder(runner.out, condition.name, seed), ignore_errors=True)
        if not runner.model_saved(condition, best):  # done before without saving its model (every process trains)
            results[best] = (best, runner.train(condition, best, save_model=True))
    return results
