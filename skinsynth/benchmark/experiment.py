"""`skinsynth benchmark`: train the same classifier on real, synthetic and mixed training sets, test on real images.

Everything the run needs is checked before a model loads or a file is written: the arms, the datasets and
their labels, that every arm's images exist, that no training image is byte-identical to a validation or test
image, and that the model is an image classifier. Each (arm, seed) run is saved under `DIR/runs/` as it ends,
with its key: what it was trained and tested on (each dataset's content, the classifier's weights, the arm, seed,
sampled rows and training settings). A benchmark started again reuses a run whose key is unchanged and trains
again, saying which input changed, one whose data was regenerated at the same path or whose settings differ.

This module checks the arguments and wires the parts together; the parts live beside it: `conditions` (arms bound
to synthetic datasets, sampled rows, the leak check), `external` (`--test-dataset` sets), `runs` (run keys and
finished runs), `runner` (training or reusing each run, saving its model).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..data import dataset_key, label_names, open_dataset
from ..errors import DatasetError, OutputError, SkinsynthError
from ..paths import portable_reference
from ..shards import atomic_write_json, read_manifest
from . import export, report
from .arms import Arm, load_arms, load_label_map, preset_arms
from .conditions import check_leaks, conditions, open_synthetic, sample_all
from .external import open_external
from .metrics import SELECT_BY, SUBGROUP_ATTRIBUTES, group_values
from .runner import Runner, run_condition
from .runs import Inputs, note_unkeyed_runs

REAL_SPLITS = ("train", "validation", "test")


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


def _portable(key: dict, field: str, out) -> dict:
    """A run key's part naming its input as the outputs do: by Hub id or by a path relative to `out`, never by this
    machine's absolute path (folders moved together keep their finished runs)."""
    return {**key, field: portable_reference(key[field], out)}


def _card_target(update_card: str | Path | None, synthetic: list[str]) -> str | None:
    """Which of the --synthetic datasets `--update-card` names (it must be one, and a local folder)."""
    if update_card is None:
        return None
    target = Path(update_card).expanduser()
    matches = [source for source in synthetic if Path(source).expanduser().exists() and Path(source).expanduser().resolve() == target.resolve()]
    if not target.is_dir() or not matches:
        raise OutputError(f"`--update-card {update_card}` must be the local folder of one of the --synthetic datasets ({', '.join(synthetic) or 'none given'})")
    return matches[0]


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
    from .classifier import check_classifier, classifier_key, normalization
    from .train import ImageRows, TrainConfig, make_accelerator

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
    synthetic_splits, synthetic_labels = open_synthetic(synthetic, class_names, mapping)
    runs = conditions(arm_list, synthetic)
    samples = sample_all(runs, class_names, real, np.asarray(real_data["train"]["label"]), synthetic, synthetic_labels, seeds, allow_fewer)
    externals = open_external([str(t) for t in test_datasets], class_names, mapping, str(real))
    check_leaks(real_data, synthetic_splits, runs, samples, [t.split for t in externals])

    # Model: an image classifier, with its input statistics.
    classifier = check_classifier(model, revision)
    norm = normalization(model, revision)
    size = image_size or norm.size or 224
    config = TrainConfig(image_size=size, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience, workers=workers,
                         select_by=select_by, class_weighted=class_weighted)
    inputs = Inputs(real=_portable(dataset_key(real, REAL_SPLITS), "source", out),
                    synthetic=[_portable(dataset_key(source, ("train",)), "source", out) for source in synthetic],
                    classifier=_portable(classifier_key(model, revision, classifier), "model", out),
                    external={t.name: _portable(dataset_key(t.source, ("test",)), "source", out) for t in externals})

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

    # Training: every (condition, seed), reusing runs finished before under the same key.
    note_unkeyed_runs(out)
    accelerator = make_accelerator(device, workers)
    runner = Runner(
        real=real_reference, synthetic=synthetic_references, model=model, revision=revision, inputs=inputs, class_names=class_names, real_data=real_data,
        synthetic_splits=synthetic_splits, samples=samples, config=config, norm=norm, accelerator=accelerator,
        val_set=ImageRows([_labelled(real_data["validation"])], size, norm, train=False),
        test_set=ImageRows([_labelled(real_data["test"])], size, norm, train=False),
        out=out, settings=settings, license=_real_license(real), progress=progress,
        external={t.name: ImageRows([(t.split, t.rows, t.labels)], size, norm, train=False) for t in externals},
    )
    start = time.perf_counter()
    results = {condition.name: run_condition(runner, condition, seeds, save_models) for condition in runs}

    if not accelerator.is_main_process:
        return {}
    summary = report.build_results(settings, class_names, runs, samples, results, time.perf_counter() - start, synthetic_references,
                                   np.asarray(real_data["train"]["label"]), test_groups(real_data["test"]),
                                   {t.name: {"source": portable_reference(t.source, out), "labels": t.labels, "dropped": t.dropped, "groups": test_groups(t.split.select(t.rows))}
                                    for t in externals},
                                   keys={(c.name, seed): runner.key(c, seed) for c in runs for seed in range(seeds)})
    report.write_outputs(out, summary)
    if card_dataset is not None:
        report.update_card(Path(card_dataset), summary, portable_reference(card_dataset, out), out)
    return summary
