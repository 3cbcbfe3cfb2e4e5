"""Metrics against values worked out by hand on a fixed set of predictions."""

import numpy as np
import pytest

from skinsynth.benchmark.metrics import (
    age_band,
    bootstrap_ci,
    chance,
    confusion_matrix,
    evaluate,
    group_values,
    majority_baseline,
    subgroup_metrics,
    summarize,
    top_k_correct,
)

# 3 classes, 6 test images. argmax predictions: 0, 1, 1, 2, 0, 2.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
SCORES = np.array([
    [0.7, 0.2, 0.1],  # true 0: rank 0
    [0.1, 0.6, 0.3],  # true 0: rank 2 (0.1 is lowest)
    [0.2, 0.5, 0.3],  # true 1: rank 0
    [0.1, 0.3, 0.6],  # true 1: rank 1
    [0.5, 0.1, 0.4],  # true 2: rank 1
    [0.2, 0.1, 0.7],  # true 2: rank 0
])


def test_top_k_by_hand():
    assert top_k_correct(Y_TRUE, SCORES, 1).tolist() == [True, False, True, False, False, True]
    assert top_k_correct(Y_TRUE, SCORES, 2).tolist() == [True, False, True, True, True, True]
    assert top_k_correct(Y_TRUE, SCORES, 3).all()


def test_ties_count_against_the_true_class():
    assert not top_k_correct(np.array([0]), np.array([[0.5, 0.5, 0.0]]), 1)[0]


def test_evaluate_by_hand():
    m = evaluate(Y_TRUE, SCORES, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(3 / 6)
    assert m["top2"] == pytest.approx(5 / 6)
    assert m["top3"] == 1.0
    # confusion rows = true: a -> a, b; b -> b, c; c -> a, c
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["per_class_recall"] == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    # every class: precision 1/2, recall 1/2 -> F1 1/2
    assert m["macro_f1"] == pytest.approx(0.5)


def test_imbalanced_balanced_accuracy_and_f1_by_hand():
    y_true = np.array([0, 0, 0, 0, 1])
    scores = np.eye(2)[[0, 0, 0, 1, 0]]  # predictions 0 0 0 1 0
    m = evaluate(y_true, scores, ["a", "b"])
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 0) / 2)
    # a: tp 3, fp 1, fn 1 -> F1 = 6/8; b: tp 0 -> 0
    assert m["macro_f1"] == pytest.approx(0.75 / 2)


def test_class_absent_from_test_is_left_out_of_balanced_accuracy():
    m = evaluate(np.array([0, 1]), np.eye(3)[[0, 0]], ["a", "b", "c"])
    assert m["per_class_recall"]["c"] is None
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_confusion_matrix_counts():
    assert confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2).tolist() == [[0, 1], [1, 1]]


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    a = bootstrap_ci(Y_TRUE, [SCORES], 3, num_resamples=200, seed=1)
    assert a == bootstrap_ci(Y_TRUE, [SCORES], 3, num_resamples=200, seed=1)
    assert a != bootstrap_ci(Y_TRUE, [SCORES], 3, num_resamples=200, seed=2)
    lo, hi = a["top1"]
    assert 0 <= lo <= 0.5 <= hi <= 1


def test_perfect_predictions_have_a_degenerate_interval():
    perfect = np.eye(3)[Y_TRUE]
    ci = bootstrap_ci(Y_TRUE, [perfect], 3, num_resamples=50)
    assert all(interval == [1.0, 1.0] for interval in ci.values())


def test_summarize_mean_and_sample_std_over_seeds():
    perfect = np.eye(3)[Y_TRUE]
    s = summarize(Y_TRUE, [SCORES, perfect], 3, num_resamples=50)
    assert s["top1"]["mean"] == pytest.approx(0.75)
    assert s["top1"]["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert summarize(Y_TRUE, [SCORES], 3, num_resamples=50)["top1"]["std"] == 0.0


def test_majority_baseline_equals_hand_computed_values():
    train = [0, 1, 1, 2, 1, 0]  # b most frequent, then a, then c
    test = [0, 0, 1, 2, 2, 2, 1, 1]
    baseline = majority_baseline(train, test, ["a", "b", "c"])
    assert baseline["class"] == "b"
    assert baseline["top1"] == 3 / 8 and baseline["top2"] == 5 / 8 and baseline["top3"] == 1.0
    assert baseline["balanced_accuracy"] == pytest.approx(1 / 3)  # recall 1 for b, 0 for a and c
    assert baseline["macro_f1"] == pytest.approx((2 * (3 / 8) / (1 + 3 / 8)) / 3)  # F1 of b (precision 3/8, recall 1), 0 for the others


def test_chance_equals_hand_computed_values():
    values = chance([0, 0, 1, 2, 2, 2, 1, 1], 4)  # a fourth class absent from the test set
    assert values["top1"] == 0.25 and values["top2"] == 0.5 and values["top3"] == 0.75 and values["balanced_accuracy"] == 0.25
    shares = [2 / 8, 3 / 8, 3 / 8]
    assert values["macro_f1"] == pytest.approx(np.mean([2 * p * 0.25 / (p + 0.25) for p in shares]))


def test_subgroup_metrics_equal_hand_computed_values():
    groups = group_values("sex", ["male", "female", "male", None, "female", "male"])
    assert groups.tolist() == ["male", "female", "male", "unknown", "female", "male"]
    # Y_TRUE 0 0 1 1 2 2, argmax predictions 0 1 1 2 0 2
    seed_a, seed_b = SCORES, np.eye(3)[[0, 0, 1, 1, 2, 2]]  # the second run is always right
    result = subgroup_metrics(Y_TRUE, [seed_a, seed_b], groups, "sex", 3, num_resamples=200)
    assert list(result) == ["female", "male", "unknown"]
    # male = images 0, 2, 5: true 0 1 2, seed a predicts 0 1 2 -> 1.0; female = images 1, 4: true 0 2, seed a predicts 1 0 -> 0.0
    assert result["male"]["count"] == 3 and result["male"]["classes"] == 3 and result["male"]["balanced_accuracy"]["mean"] == 1.0
    assert result["female"]["count"] == 2 and result["female"]["balanced_accuracy"]["mean"] == 0.5  # mean of 0.0 (seed a) and 1.0 (seed b)
    assert result["female"]["balanced_accuracy"]["std"] == pytest.approx(np.std([0.0, 1.0], ddof=1))
    assert result["unknown"]["top1"]["mean"] == 0.5 and result["unknown"]["count"] == 1  # image 3: true 1, seed a says 2
    for info in result.values():
        low, high = info["balanced_accuracy"]["ci95"]
        assert 0 <= low <= info["balanced_accuracy"]["mean"] <= high <= 1 or info["count"] == 1


def test_ages_fall_into_bands():
    assert group_values("age", ["80", "5", "45.0", None, "x", "29", "30"]).tolist() == ["75+", "0-29", "45-59", "unknown", "unknown", "0-29", "30-44"]
    assert age_band(74.9) == "60-74" and age_band("") == "unknown"


def test_paired_ratio_of_an_arm_to_itself_is_exactly_one_and_pairing_narrows_the_interval():
    from skinsynth.benchmark.metrics import paired_ratio

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = [np.eye(3)[np.where(rng.random(300) < 0.8, y, rng.integers(0, 3, 300))] for _ in range(2)]
    worse = [np.eye(3)[np.where(rng.random(300) < 0.5, y, rng.integers(0, 3, 300))] for _ in range(2)]
    same = paired_ratio(y, good, good, 3, num_resamples=200)
    assert same["value"] == 1.0 and same["ci95"] == [1.0, 1.0]
    paired = paired_ratio(y, worse, good, 3, num_resamples=400)
    expected = np.mean([balanced(y, s) for s in worse]) / np.mean([balanced(y, s) for s in good])
    assert paired["value"] == pytest.approx(expected) and paired["ci95"][0] < paired["value"] < paired["ci95"][1]
    # Dividing the two arms' separate intervals (their ends) spans more than the paired interval does.
    low, high = (bootstrap_ci(y, worse, 3, 400)["balanced_accuracy"], bootstrap_ci(y, good, 3, 400, seed=1)["balanced_accuracy"])
    assert paired["ci95"][1] - paired["ci95"][0] < low[1] / high[0] - low[0] / high[1]


def balanced(y, scores):
    return evaluate(y, scores, ["a", "b", "c"])["balanced_accuracy"]
