"""Benchmark: what a synthetic dataset is worth to a classifier tested on real images.

    arms.py        which real and synthetic training images each arm gets (presets, --scale, seeded sampling)
    conditions.py  arms bound to the synthetic datasets, every run's sampled rows, the train/held-out leak check
    external.py    the `--test-dataset` sets: other real test splits, labels matched to the training classes
    metrics.py     top-k, balanced accuracy, macro F1, confusion matrix, bootstrap CIs (numpy only)
    classifier.py  which models qualify, the classifier's key, loading it with a fresh head, its input statistics
    train.py       images decoded once up front (uint8), augmentation, the training loop
    runs.py        run keys (what a run was trained on) and the finished runs saved under DIR/runs/
    runner.py      each (arm, seed) run trained or reused, and its model folder saved
    report.py      results.json / .csv / .md, plots, the dataset card's reports/benchmark.json
    experiment.py  `benchmark(...)`: checks everything up front, then runs every arm × seed
    export.py      each run's chosen weights as a transformers model folder with its card (`--save-models`)
    skin_classification/  the metrics as an `evaluate` module: `evaluate.load(METRIC_PATH)`, offline
"""

from pathlib import Path

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "PRESETS": "arms",
    "Arm": "arms",
    "benchmark": "experiment",
})

METRIC_PATH = str(Path(__file__).resolve().parent / "skin_classification")  # evaluate.load(METRIC_PATH)

__all__ = ["METRIC_PATH", "PRESETS", "Arm", "benchmark"]
