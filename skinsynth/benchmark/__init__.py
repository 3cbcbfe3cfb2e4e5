"""Benchmark: what a synthetic dataset is worth to a classifier tested on real images.

    arms.py        which real and synthetic training images each arm gets (presets, --scale, seeded sampling)
    metrics.py     top-k, balanced accuracy, macro F1, confusion matrix, bootstrap CIs (numpy only)
    train.py       classifier loading, images decoded once up front (uint8), augmentation, the training loop
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
