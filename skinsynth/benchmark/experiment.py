"""`skinsynth benchmark`: train the same classifier on real, synthetic and mixed training sets, test on real images.

Everything the run needs is checked before a model loads or a file is written: the arms, the datasets and
their labels, that every arm's images exist, that no training image is byte-identical to a validation or test
image, and that the model is an image classifier. Each (arm, seed) run is saved under `DIR/runs/` as it ends,
so an interrupted benchmark started again with the same arguments skips what is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data import label_names, open_dataset
from ..errors import DatasetError, OutputError, SkinsynthError
from ..paths import portable_reference
from ..shards import atomic_write_json, read_manifest
from . import export, report
from .arms import (
    Arm,
    ArmSample,
    load_arms,
    load_label_map,
    match_labels,
    preset_arms,
    sample_arm,
)
from .metrics import SELECT_BY, SUBGROUP_ATTRIBUTES, group_values

if TYPE_CHECKING:
    from .train import RunResult

logger = logging.getLogger(__name__)

REAL_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Condition:
    """An arm bound to one synthetic dataset (or none): what one row of the results table is."""

    name: str
    arm: Arm
    synthetic: int | None  # index into the synthetic datasets


def _short_name(source: str) -> str:
    return Path(source.rstrip("/")).name or source


def conditions(arms: list[Arm], synthetic: list[str]) -> list[Condition]:
    """Real-only arms run once; an arm with synthetic images runs once per synthetic dataset (`name@dataset`).

    Without synthetic datasets the arms that need them are left out (the real baselines, reused later by a run
    into the same folder that adds `--synthetic`); if that leaves none, it is an error.
    """
    result = []
    skipped = [arm.name for arm in arms if arm.uses_synthetic and not synthetic]
    if skipped and len(skipped) == len(arms):
        raise DatasetError(f"every arm ({', '.join(skipped)}) needs synthetic images: pass --synthetic DATASET")
    if skipped:
        logger.warning("no --synthetic dataset: running only the real-only arms (leaving out %s)", ", ".join(skipped))
    for arm in arms:
        if arm.uses_synthetic and not synthetic:
            continue
        if not arm.uses_synthetic:
            result.append(Condition(arm.name, arm, None))
            continue
        for index, source in enumerate(synthetic):
            name = arm.name if len(synthetic) == 1 else f"{arm.name}@{_short_name(source)}"
            result.append(Condition(name, arm, index))
    names = [c.name for c in result]
    if len(set(names)) != len(names):
        raise SkinsynthError(f"two synthetic datasets have the same folder name ({', '.join(synthetic)}); rename one so results can tell them apart")
    return result


def image_digests(split) -> np.ndarray:
    """SHA-1 of every stored image's bytes in a split, read straight from Arrow (no decoding)."""
    import pyarrow.compute as pc

    column = split.data.column("image")
    stored = pc.struct_field(column, "bytes").to_pylist()
    return np.array([hashlib.sha1(b).hexdigest() if b is not None else "" for b in stored], dtype=object)


def check_no_leak(name: str, sample: ArmSample, real_train: np.ndarray, synthetic_train: np.ndarray | None, held_out: set[str]) -> None:
    """Raise if any training image of a condition is byte-identical to a real validation or test image."""
    used = list(real_train[sample.real_rows]) + (list(synthetic_train[sample.synthetic_rows]) if synthetic_train is not None else [])
    leaked = len({d for d in used if d} & held_out)
    if leaked:
        raise DatasetError(
            f"arm `{name}`: {leaked} training images are byte-identical to real validation/test images; "
            "the real dataset's splits overlap (split it by lesion or patient) or the synthetic dataset copies held-out images"
        )


def _identity(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_path(out: Path, condition: str, seed: int) -> Path:
    return out / "runs" / f"{condition}-seed{seed}.json"


def _load_done(path: Path, identity: str) -> RunResult | None:
    from .train import RunResult

    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("identity") != identity:
        return None
    return RunResult(
        np.asarray(saved["test_scores"], dtype=np.float32), np.asarray(saved["test_labels"]), saved["epochs_run"], saved["best_epoch"],
        saved["best_val_top1"], saved["history"], saved["seconds"], saved["data_wait_share"], saved["images_per_second"], saved.get("best_val", {}),
        {name: np.asarray(scores, dtype=np.float32) for name, scores in saved.get("external_scores", {}).items()},
    )


def _save_done(path: Path, identity: str, result: RunResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {
        "identity": identity, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "best_val_top1": result.best_val_top1,
        "best_val": result.best_val, "history": result.history, "seconds": result.seconds, "data_wait_share": result.data_wait_share,
        "images_per_second": result.images_per_second,
        "test_labels": result.test_labels.tolist(), "test_scores": result.test_scores.tolist(),
        "external_scores": {name: scores.tolist() for name, scores in result.external_scores.items()},
    })


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SkinsynthError(f"`--{option}` must be one of {', '.join(choices)}, got {value!r}")


PAPER_SELECT_BY = {"akrout2023": "top1"}  # the paper stopped early on validation accuracy


def default_select_by(preset: str | None) -> str:
    """The paper preset keeps the paper's choice (top-1); anything else selects by balanced accuracy, which a
    majority-class guess cannot inflate on an imbalanced validation split."""
    return PAPER_SELECT_BY.get(preset or "", "balanced_accuracy")


def _check_numbers(**values) -> None:
    minimum = {"epochs": 1, "batch_size": 1, "seeds": 1, "patience": 1, "workers": 0, "image_size": 8}
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or value < minimum[name]):
            raise SkinsynthError(f"`--{name.replace('_', '-')}` must be an integer of at least {minimum[name]}, got {value!r}")


def default_workers(device: str | None = None) -> int:
    """DataLoader workers. On a GPU: the cores beside the training process, at most 8. On the CPU: none, since
    images are decoded once into memory and augmenting one costs far less than a worker's share of the cores
    would cost the training step (`benchmarks/bench_dataloading.py`)."""
    import torch

    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    return 0 if cpu else max(0, min(8, (os.cpu_count() or 1) - 1))


def _card_target(update_card: str | Path | None, synthetic: list[str]) -> str | None:
    """Which of the --synthetic datasets `--update-card` names (it must be one, and a local folder)."""
    if update_card is None:
        return None
    target = Path(update_card).expanduser()
    matches = [source for source in synthetic if Path(source).expanduser().exists() and Path(source).expanduser().resolve() == target.resolve()]
    if not target.is_dir() or not matches:
        raise OutputError(f"`--update-card {update_card}` must be the local folder of one of the --synthetic datasets ({', '.join(synthetic) or 'none given'})")
    return matches[0]


def _open_synthetic(synthetic: list[str], class_names: list[str], mapping: dict) -> tuple[list, list[np.ndarray]]:
    """Each synthetic dataset's train split, and its rows' labels as real label ids (-1: dropped by the mapping)."""
    splits, labels = [], []
    for source in synthetic:
        data = open_dataset(source, required_splits=("train",))
        to_real = match_labels(class_names, label_names(data), mapping, synthetic_source=source)
        splits.append(data["train"])
        labels.append(to_real[np.asarray(data["train"]["label"])])
    return splits, labels


def _sample_all(runs: list[Condition], class_names, real: str, real_labels, synthetic: list[str], synthetic_labels, seeds: int, allow_fewer: bool) -> dict:
    def sample(condition: Condition, seed: int) -> ArmSample:
        index = condition.synthetic
        return sample_arm(condition.arm, class_names, real_labels, None if index is None else synthetic_labels[index], seed, allow_fewer,
                          real_source=f"the train split of `{real}`",
                          synthetic_source="the synthetic train split" if index is None else f"the train split of `{synthetic[index]}`")

    return {(c.name, seed): sample(c, seed) for c in runs for seed in range(seeds)}


def _check_leaks(real_data, synthetic_splits: list, runs: list[Condition], samples: dict, external_splits: list = ()) -> None:
    held_out = set(image_digests(real_data["validation"])) | set(image_digests(real_data["test"]))
    for split in external_splits:
        held_out |= set(image_digests(split))
    held_out -= {""}
    real_digests = image_digests(real_data["train"])
    synthetic_digests = [image_digests(split) for split in synthetic_splits]
    by_name = {c.name: c for c in runs}
    for (name, _), sample in samples.items():
        index = by_name[name].synthetic
        check_no_leak(name, sample, real_digests, None if index is None else synthetic_digests[index], held_out)


@dataclass(frozen=True)
class ExternalTest:
    """Another real dataset's test split, its rows whose labels match the training classes, in their label ids."""

    name: str
    source: str
    split: object
    rows: np.ndarray
    labels: np.ndarray
    dropped: int  # test images of classes the mapping drops


def open_external(sources: list[str], class_names: list[str], mapping: dict, real: str) -> list[ExternalTest]:
    """Each `--test-dataset`'s test split with labels matched to the real dataset's by name (or `--label-map`);
    its classes the benchmark does not train on must be dropped explicitly (`null` in the label map)."""
    tests = []
    for source in sources:
        if Path(source).expanduser().resolve() == Path(real).expanduser().resolve():
            raise DatasetError(f"`--test-dataset {source}` is the real dataset itself; its test split is already used")
        data = open_dataset(source, required_splits=("test",))
        to_real = match_labels(class_names, label_names(data), mapping, synthetic_source=source, cover_real=False)
        labels = to_real[np.asarray(data["test"]["label"])]
        rows = np.flatnonzero(labels >= 0)
        if not len(rows):
            raise DatasetError(f"`--test-dataset {source}` has no test image of the classes trained on ({', '.join(class_names)})")
        tests.append(ExternalTest(_short_name(source), source, data["test"], rows, labels[rows], int((labels < 0).sum())))
    names = [t.name for t in tests]
    if len(set(names)) != len(names):
        raise SkinsynthError(f"two --test-dataset folders have the same name ({', '.join(sources)}); rename one so results can tell them apart")
    return tests


def _labelled(split) -> tuple:
    """A whole split as an `ImageRows` part: every row, with its own labels."""
    return split, np.arange(len(split)), np.asarray(split["label"])


def test_groups(test_split) -> dict[str, np.ndarray]:
    """Each real test image's subgroup for every subgroup attribute the dataset has (fitzpatrick, body_site, sex,
    age in bands), in test-split order: what the per-subgroup metrics are computed over."""
    return {attribute: group_values(attribute, test_split[attribute]) for attribute in SUBGROUP_ATTRIBUTES if attribute in test_split.column_names}


def _real_license(real: str) -> str | None:
    """The real dataset's license from its manifest (a local `skinsynth prepare` folder), else None (unknown)."""
    try:
        return read_manifest(real)[1].get("license")
    except DatasetError:
        return None


@dataclass
class _Runner:
    """Everything one (condition, seed) run needs: trains it, or reuses its finished result, and saves its model."""

    real: str
    synthetic: list[str]
    model: str
    revision: str | None
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

    def identity(self, condition: Condition, seed: int) -> str:
        sample = self.samples[(condition.name, seed)]
        return _identity(real=self.real, synthetic=None if condition.synthetic is None else self.synthetic[condition.synthetic], model=self.model,
                         revision=self.revision, device=str(self.accelerator.device), seed=seed,
                         config={k: v for k, v in asdict(self.config).items() if k != "workers"},
                         rows=[sample.real_rows.tolist(), sample.synthetic_rows.tolist()], external=sorted(self.external))

    def finished(self, condition: Condition, seed: int, need_model: bool) -> RunResult | None:
        """A run done before with the same inputs (and, if `need_model`, whose model folder was saved), else None."""
        identity = self.identity(condition, seed)
        result = _load_done(_run_path(self.out, condition.name, seed), identity)
        if result is not None and need_model and export.saved_identity(export.model_folder(self.out, condition.name, seed)) != identity:
            logger.info("%s seed %d: done before, but its model was not saved: training it again", condition.name, seed)
            return None
        return result

    def train(self, condition: Condition, seed: int, save_model: bool) -> RunResult:
        from .train import ImageRows, load_classifier, train_and_predict

        sample = self.samples[(condition.name, seed)]
        parts = [(self.real_data["train"], sample.real_rows, sample.real_labels)]
        if condition.synthetic is not None:
            parts.append((self.synthetic_splits[condition.synthetic], sample.synthetic_rows, sample.synthetic_labels))
        train_set = ImageRows(parts, self.config.image_size, self.norm, train=True, seed=seed)
        result = train_and_predict(lambda: load_classifier(self.model, self.class_names, self.revision), train_set, self.val_set, self.test_set,
                                   self.config, seed, self.accelerator, progress_desc=f"{condition.name} seed {seed} ({len(train_set)} images)",
                                   progress=self.progress, external=self.external)
        if self.accelerator.is_main_process:
            identity = self.identity(condition, seed)
            if save_model:
                self.save_model(condition, seed, identity, sample, result)
            _save_done(_run_path(self.out, condition.name, seed), identity, result)
        result.model = None
        return result

    def save_model(self, condition: Condition, seed: int, identity: str, sample: ArmSample, result: RunResult) -> None:
        from .metrics import SUMMARY_METRICS, evaluate

        test = evaluate(result.test_labels, result.test_scores, self.class_names)
        run = {
            "identity": identity, "arm": condition.name, "seed": seed, "classes": self.class_names,
            "synthetic_dataset": None if condition.synthetic is None else self.synthetic[condition.synthetic],
            "real_images": len(sample.real_rows), "synthetic_images": len(sample.synthetic_rows),
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "validation": result.best_val,
            "test": {k: test[k] for k in SUMMARY_METRICS}, "test_images": len(result.test_labels),
        }
        name = f"{condition.name}-seed{seed}"
        card = export.model_card(name, run, self.settings, self.license, _short_name(self.real), self.real)
        processor = export.image_processor(self.norm.mean, self.norm.std, self.config.image_size)
        export.save_classifier(export.model_folder(self.out, condition.name, seed), result.model, processor, card, run)


def _best_seed(results: list[tuple[int, RunResult]], select_by: str) -> int:
    sign = -1.0 if select_by == "loss" else 1.0
    return max(results, key=lambda pair: sign * pair[1].best_val.get(select_by, -math.inf * sign))[0]


def _run_condition(runner: _Runner, condition: Condition, seeds: int, save_models: str) -> list[tuple[int, RunResult]]:
    """Every seed of one condition; then, with `--save-models best`, only the best seed's model folder is kept."""
    keep = save_models == "all" or (save_models == "real" and condition.synthetic is None)
    results = []
    for seed in range(seeds):
        result = runner.finished(condition, seed, need_model=keep)
        if result is not None:
            logger.info("%s seed %d: done before, reusing it", condition.name, seed)
        else:
            result = runner.train(condition, seed, save_model=keep or save_models == "best")
        results.append((seed, result))
    if save_models == "best":
        best = _best_seed(results, runner.config.select_by)
        if runner.accelerator.is_main_process:
            for seed, _ in results:
                if seed != best:
                    shutil.rmtree(export.model_folder(runner.out, condition.name, seed), ignore_errors=True)
        if runner.finished(condition, best, need_model=True) is None:  # done before without saving its model (every process trains)
            results[best] = (best, runner.train(condition, best, save_model=True))
    return results


def benchmark(
    real: str,
    synthetic: list[str] | tuple[str, ...] = (),
    *,
    model: str,
    out: str | Path,
    preset: str | None = None,
    arms: str | Path | list[Arm] | None = None,
    image_size: int | None = None,
    epochs: int = 50,
    batch_size: int = 32,
    seeds: int = 3,
    scale: float = 1.0,
    device: str | None = None,
    allow_fewer: bool = False,
    label_map: str | Path | dict | None = None,
    patience: int = 10,
    learning_rate: float = 3e-4,
    workers: int | None = None,
    select_by: str | None = None,
    class_weighted: bool = False,
    save_models: str = "real",
    test_datasets: list[str] | tuple[str, ...] = (),
    update_card: str | Path | None = None,
    revision: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Train `model` on every arm × seed and test on `real`'s test split; write the results to `out`.

    Mirrors `skinsynth benchmark`. `arms` is an arms YAML file or a list of `Arm`s; give it or `preset`.
    `select_by` is the validation metric early stopping keeps the best epoch by (default: top1 for the paper's
    preset, as in the paper; balanced_accuracy otherwise). `save_models` (real, best, all, none) says which runs are
    saved as model folders under `out/models/` (see `export`). `test_datasets` are other real datasets whose test
    splits every arm is also tested on (cross-dataset generalisation; labels matched by name or `label_map`). `update_card` names a synthetic dataset folder whose
    `reports/benchmark.json` (and card) gets the results. Returns the content of `out/results.json`.
    """
    from .train import (
        ImageRows,
        TrainConfig,
        check_classifier,
        make_accelerator,
        normalization,
    )

    # Arguments and arms.
    synthetic = [str(s) for s in synthetic]
    workers = default_workers(device) if workers is None else workers
    _check_numbers(epochs=epochs, batch_size=batch_size, seeds=seeds, patience=patience, workers=workers, image_size=image_size)
    select_by = select_by or default_select_by(preset)
    _check_choice("select-by", select_by, SELECT_BY)
    _check_choice("save-models", save_models, export.SAVE_MODELS)
    if (preset is None) == (arms is None):
        raise SkinsynthError("give exactly one of `--preset` (akrout2023, ratio-sweep) and `--arms ARMS.yaml`")
    arm_list = preset_arms(preset, scale) if preset is not None else (load_arms(arms, scale) if isinstance(arms, (str, Path)) else [a.scaled(scale) for a in arms])
    card_dataset = _card_target(update_card, synthetic)

    # Data: the real splits, each synthetic train split with its labels mapped onto the real ones; every arm's rows.
    real_data = open_dataset(real, required_splits=REAL_SPLITS)
    class_names = label_names(real_data)
    mapping = label_map if isinstance(label_map, dict) else load_label_map(label_map)
    synthetic_splits, synthetic_labels = _open_synthetic(synthetic, class_names, mapping)
    runs = conditions(arm_list, synthetic)
    samples = _sample_all(runs, class_names, real, np.asarray(real_data["train"]["label"]), synthetic, synthetic_labels, seeds, allow_fewer)
    externals = open_external([str(t) for t in test_datasets], class_names, mapping, str(real))
    _check_leaks(real_data, synthetic_splits, runs, samples, [t.split for t in externals])

    # Model: an image classifier, with its input statistics.
    check_classifier(model, revision)
    norm = normalization(model, revision)
    size = image_size or norm.size or 224
    config = TrainConfig(image_size=size, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience, workers=workers,
                         select_by=select_by, class_weighted=class_weighted)

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder `{out}`: {err}") from None
    # The outputs name their inputs by Hub id or by a path relative to `out`, never by this machine's absolute paths.
    real_reference, synthetic_references = portable_reference(real, out), [portable_reference(s, out) for s in synthetic]
    settings = {
        "real": real_reference, "synthetic": synthetic_references, "model": portable_reference(model, out), "revision": revision, "preset": preset,
        "arms": [a.model_dump(exclude_none=True) for a in arm_list], "scale": scale, "image_size": size, "epochs": epochs,
        "batch_size": batch_size, "seeds": seeds, "patience": patience, "learning_rate": learning_rate, "allow_fewer": allow_fewer,
        "select_by": select_by, "class_weighted": class_weighted, "save_models": save_models, "test_datasets": [portable_reference(t.source, out) for t in externals], "label_map": mapping, "command": command,
    }
    atomic_write_json(out / "config.json", settings)

    # Training: every (condition, seed), reusing runs finished before with the same inputs.
    accelerator = make_accelerator(device, workers)
    runner = _Runner(
        real=real_reference, synthetic=synthetic_references, model=model, revision=revision, class_names=class_names, real_data=real_data,
        synthetic_splits=synthetic_splits, samples=samples, config=config, norm=norm, accelerator=accelerator,
        val_set=ImageRows([_labelled(real_data["validation"])], size, norm, train=False),
        test_set=ImageRows([_labelled(real_data["test"])], size, norm, train=False),
        out=out, settings=settings, license=_real_license(real), progress=progress,
        external={t.name: ImageRows([(t.split, t.rows, t.labels)], size, norm, train=False) for t in externals},
    )
    start = time.perf_counter()
    results = {condition.name: _run_condition(runner, condition, seeds, save_models) for condition in runs}

    if not accelerator.is_main_process:
        return {}
    summary = report.build_results(settings, class_names, runs, samples, results, time.perf_counter() - start, synthetic_references,
                                   np.asarray(real_data["train"]["label"]), test_groups(real_data["test"]),
                                   {t.name: {"source": t.source, "labels": t.labels, "dropped": t.dropped, "groups": test_groups(t.split.select(t.rows))}
                                    for t in externals})
    report.write_outputs(out, summary)
    if card_dataset is not None:
        report.update_card(Path(card_dataset), summary, portable_reference(card_dataset, out))
    return summary
