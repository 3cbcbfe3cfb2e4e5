"""The benchmark's metrics as an `evaluate` module, loaded offline by path, and the Hub's model-index form."""

import evaluate
import numpy as np
import pytest
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from skinsynth.benchmark import METRIC_PATH
from skinsynth.benchmark.export import eval_results, model_index
from skinsynth.benchmark.metrics import bootstrap_ci
from skinsynth.benchmark.metrics import evaluate as benchmark_metrics

Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
SCORES = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4], [0.2, 0.1, 0.7]], dtype=np.float32)


def test_the_evaluate_module_loads_offline_by_path_and_gives_the_benchmarks_numbers():
    metric = evaluate.load(METRIC_PATH)
    result = metric.compute(predictions=SCORES.tolist(), references=Y_TRUE.tolist(), class_names=["a", "b", "c"], bootstrap=200, seed=1)
    expected = benchmark_metrics(Y_TRUE, SCORES, ["a", "b", "c"])
    assert result["top1"] == 0.5 and result["top2"] == pytest.approx(5 / 6)  # argmax 0 1 1 2 0 2 against 0 0 1 1 2 2
    assert {k: v for k, v in result.items() if k != "ci95"} == expected
    assert result["ci95"] == bootstrap_ci(Y_TRUE, [SCORES], 3, num_resamples=200, seed=1)
    # batches added one at a time give the same result
    for scores, label in zip(SCORES, Y_TRUE):
        metric.add(predictions=scores.tolist(), references=int(label))
    assert metric.compute()["macro_f1"] == pytest.approx(expected["macro_f1"])
    with pytest.raises(ValueError, match="class names"):
        metric.compute(predictions=SCORES.tolist(), references=Y_TRUE.tolist(), class_names=["a", "b"])


def test_model_index_is_the_hub_form_a_model_card_parses():
    metrics = {"top1": {"mean": 0.5, "std": 0.1, "ci95": [0.4, 0.6]}, "balanced_accuracy": {"mean": 0.25}, "top3": 0.9}
    index = model_index("real-500", metrics, "ham10000", "./ham10000")
    assert index[0]["name"] == "real-500"
    result = index[0]["results"][0]
    assert result["task"] == {"type": "image-classification", "name": "Image Classification"}
    assert result["dataset"] == {"name": "ham10000", "type": "./ham10000", "split": "test"}
    assert {m["name"]: m["value"] for m in result["metrics"]} == {"Balanced accuracy": 0.25, "Top-1 accuracy": 0.5, "Top-3 accuracy": 0.9}
    name, parsed = model_index_to_eval_results(index)
    assert name == "real-500" and [r.metric_value for r in parsed] == [r.metric_value for r in eval_results(metrics, "ham10000", "./ham10000")]
    card = ModelCard(f"---\n{ModelCardData(model_name='real-500', eval_results=parsed).to_yaml()}\n---\n")
    assert card.data.to_dict()["model-index"] == index
