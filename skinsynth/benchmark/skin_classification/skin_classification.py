"""skinsynth's benchmark metrics as a Hugging Face `evaluate` module, loadable offline by path:

    import evaluate
    from skinsynth.benchmark import METRIC_PATH

    metric = evaluate.load(METRIC_PATH)
    metric.compute(predictions=class_scores, references=labels, bootstrap=1000)

The same numbers `skinsynth benchmark` reports (skinsynth.benchmark.metrics), so results computed elsewhere (a
transformers Trainer, another training script) compare with a benchmark's results.json directly.
"""

import datasets
import evaluate
import numpy as np

from skinsynth.benchmark.metrics import SUMMARY_METRICS, bootstrap_ci, evaluate as all_metrics

_DESCRIPTION = """Top-1/2/3 accuracy, balanced accuracy (mean recall over the classes present in the references) and
macro F1 (over the same classes) of class scores against integer labels, with optional percentile-bootstrap 95%
confidence intervals over the images, as skinsynth's benchmark computes them."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row of class scores (logits or probabilities) per image.
    references (`list` of `int`): the true class id of each image.
    class_names (`list` of `str`, optional): names for `per_class_recall` (default: the class ids).
    bootstrap (`int`, optional): number of bootstrap resamples for 95% intervals (default 0: none).
    seed (`int`, optional): seed of the bootstrap resampling (default 0).
Returns:
    top1, top2, top3, balanced_accuracy, macro_f1 (floats), per_class_recall (dict), confusion_matrix (list of
    lists) and, with `bootstrap`, ci95: {metric: [low, high]}.
Example:
    >>> metric = evaluate.load(METRIC_PATH)
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], references=[0, 1, 1])["balanced_accuracy"]
    0.75
"""

_CITATION = """@article{akrout2023diffusion,
  title = {Diffusion-based Data Augmentation for Skin Disease Classification: Impact Across Original Medical Datasets to Fully Synthetic Images},
  author = {Akrout, Mohamed and Gyepesi, B{\\'a}lint and Holl{\\'o}, P{\\'e}ter and Po{\\'o}r, Adrienn and Kincs{\\H{o}}, Bl{\\'a}ga and Solis, Stephen and Cirone, Katrina and Kawahara, Jeremy and Slade, Dekker and Abid, Latif and Kov{\\'a}cs, M{\\'a}t{\\'e} and Fazekas, Istv{\\'a}n},
  journal = {arXiv preprint arXiv:2301.04802},
  year = {2023}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SkinClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}),
            reference_urls=["https://arxiv.org/abs/2301.04802"],
        )

    def _compute(self, predictions, references, class_names=None, bootstrap=0, seed=0):
        scores, labels = np.asarray(predictions, dtype=np.float32), np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or len(scores) != len(labels):
            raise ValueError(f"`predictions` must hold one row of class scores per reference, got shape {scores.shape} for {len(labels)} references")
        names = list(class_names) if class_names is not None else [str(i) for i in range(scores.shape[1])]
        if len(names) != scores.shape[1] or labels.min() < 0 or labels.max() >= len(names):
            raise ValueError(f"{scores.shape[1]} class scores per image, {len(names)} class names and labels from {labels.min()} to {labels.max()} do not agree")
        result = all_metrics(labels, scores, names)
        if bootstrap:
            intervals = bootstrap_ci(labels, [scores], len(names), num_resamples=int(bootstrap), seed=seed)
            result["ci95"] = {name: intervals[name] for name in SUMMARY_METRICS}
        return result
