"""Arms: presets, --scale, arms files, label matching and seeded per-class sampling (no data, no model)."""

import numpy as np
import pytest

from skinsynth.benchmark.arms import Arm, load_label_map, match_labels, parse_arms, preset_arms, sample_arm
from skinsynth.benchmark.conditions import conditions
from skinsynth.errors import DatasetError, RecipeError, SkinsynthError

CLASSES = ["nevus", "melanoma", "keratosis"]
REAL = np.repeat([0, 1, 2], [40, 12, 30])  # rows per class in the real train split
SYNTHETIC = np.tile([0, 1, 2, -1], 30)  # 30 per class, plus a dropped class (-1)


def counts(rows, labels, split_labels):
    assert (split_labels[rows] == labels).all()
    return np.bincount(labels, minlength=3).tolist()


def test_exact_per_class_counts():
    s = sample_arm(Arm(name="hybrid", real_per_class=10, synthetic_per_class=20), CLASSES, REAL, SYNTHETIC, seed=0)
    assert counts(s.real_rows, s.real_labels, REAL) == [10, 10, 10]
    assert counts(s.synthetic_rows, s.synthetic_labels, SYNTHETIC) == [20, 20, 20]
    assert s.real_per_class == {"nevus": 10, "melanoma": 10, "keratosis": 10}
    assert len(set(s.real_rows.tolist())) == 30 and len(s) == 90


def test_sampling_is_seeded_nested_and_per_class_independent():
    small = sample_arm(Arm(name="a", real_per_class=5), CLASSES, REAL, None, seed=3)
    assert np.array_equal(small.real_rows, sample_arm(Arm(name="b", real_per_class=5), CLASSES, REAL, None, seed=3).real_rows)
    large = sample_arm(Arm(name="c", real_per_class=10), CLASSES, REAL, None, seed=3)
    assert set(small.real_rows.tolist()) <= set(large.real_rows.tolist())
    assert not np.array_equal(small.real_rows, sample_arm(Arm(name="a", real_per_class=5), CLASSES, REAL, None, seed=4).real_rows)
    # adding rows of another class does not change which nevus rows are taken
    more = np.concatenate([REAL, np.full(7, 2)])
    other = sample_arm(Arm(name="a", real_per_class=5), CLASSES, more, None, seed=3)
    assert np.array_equal(other.real_rows[other.real_labels == 0], small.real_rows[small.real_labels == 0])


def test_fraction_and_ratio():
    s = sample_arm(Arm(name="f", real_fraction=0.5, synthetic_ratio=2), CLASSES, REAL, SYNTHETIC, seed=0, allow_fewer=True)
    assert s.real_per_class == {"nevus": 20, "melanoma": 6, "keratosis": 15}
    assert s.synthetic_per_class == {"nevus": 30, "melanoma": 12, "keratosis": 30}  # 2 x real, but only 30 synthetic nevus rows exist


def test_ratio_multiplies_the_real_count_taken():
    s = sample_arm(Arm(name="r", real_per_class=10, synthetic_ratio=1.5), CLASSES, REAL, SYNTHETIC, seed=0)
    assert s.synthetic_per_class == {"nevus": 15, "melanoma": 15, "keratosis": 15}


def test_real_seeds_pools_what_each_seed_drew_the_same_for_every_run_seed():
    per_seed = [set(sample_arm(Arm(name="real-10", real_per_class=10), CLASSES, REAL, None, seed=s).real_rows.tolist()) for s in range(3)]
    pooled = sample_arm(Arm(name="real-10-x3", real_per_class=10, real_seeds=3), CLASSES, REAL, None, seed=0)
    assert set(pooled.real_rows.tolist()) == per_seed[0] | per_seed[1] | per_seed[2]
    assert len(pooled.real_rows) == len(set(pooled.real_rows.tolist())) and (REAL[pooled.real_rows] == pooled.real_labels).all()
    assert 10 < pooled.real_per_class["nevus"] <= 30 and pooled.real_per_class["melanoma"] == 12  # a small class is soon all taken
    assert np.array_equal(pooled.real_rows, sample_arm(Arm(name="real-10-x3", real_per_class=10, real_seeds=3), CLASSES, REAL, None, seed=7).real_rows)
    with pytest.raises(RecipeError, match="real-only arms"):
        parse_arms({"arms": [{"name": "mix", "real_per_class": 5, "synthetic_per_class": 5, "real_seeds": 3}]})


def test_too_many_names_the_class_unless_allow_fewer():
    with pytest.raises(DatasetError, match=r"20 real images of `melanoma` but .* holds 12.*--allow-fewer"):
        sample_arm(Arm(name="big", real_per_class=20), CLASSES, REAL, None, seed=0)
    s = sample_arm(Arm(name="big", real_per_class=20), CLASSES, REAL, None, seed=0, allow_fewer=True)
    assert s.real_per_class == {"nevus": 20, "melanoma": 12, "keratosis": 20}


def test_synthetic_arm_without_synthetic_dataset():
    with pytest.raises(DatasetError, match="--synthetic"):
        sample_arm(Arm(name="syn", synthetic_per_class=5), CLASSES, REAL, None, seed=0)


def test_presets_and_scale():
    arms = preset_arms("akrout2023", scale=0.1)
    assert [(a.name, a.real_per_class, a.synthetic_per_class) for a in arms] == [
        ("real-250", 25, None), ("real-500", 50, None), ("hybrid-250+250", 25, 25), ("synthetic-500", None, 50)]
    sweep = preset_arms("ratio-sweep", scale=0.01)
    assert [a.synthetic_ratio for a in sweep] == [0, 0.5, 1, 2, 4, 10] and {a.real_per_class for a in sweep} == {2}
    with pytest.raises(RecipeError, match="unknown preset"):
        preset_arms("nope")
    with pytest.raises(RecipeError, match="--scale"):
        preset_arms("akrout2023", scale=0)


def test_arms_file_validation():
    arms = parse_arms({"arms": [{"name": "real", "real_per_class": 100}, {"name": "mix", "real_fraction": 0.5, "synthetic_ratio": 1}]}, scale=0.5)
    assert arms[0].real_per_class == 50 and arms[1].real_fraction == 0.25
    with pytest.raises(RecipeError, match=r"arms\.0\.real_per_clas.*Extra inputs"):
        parse_arms({"arms": [{"name": "real", "real_per_clas": 100}]})
    with pytest.raises(RecipeError, match="unique"):
        parse_arms({"arms": [{"name": "a", "real_per_class": 1}, {"name": "a", "real_per_class": 2}]})
    with pytest.raises(RecipeError, match="not both"):
        parse_arms({"arms": [{"name": "a", "real_per_class": 1, "real_fraction": 0.5}]})
    with pytest.raises(RecipeError, match="no training images"):
        parse_arms({"arms": [{"name": "a"}]})


def test_labels_match_by_name_ignoring_case_and_separators():
    assert match_labels(["melanocytic_nevus", "melanoma"], ["Melanoma", "melanocytic nevus"]).tolist() == [1, 0]
    mapped = match_labels(["nevus", "melanoma"], ["mole", "melanoma", "other"], {"mole": "nevus", "other": None})
    assert mapped.tolist() == [0, 1, -1]


def test_label_mismatch_lists_both_sides():
    with pytest.raises(DatasetError, match=r"0 in common.*Real: nevus, melanoma\. Synthetic: cat, dog.*--label-map"):
        match_labels(["nevus", "melanoma"], ["cat", "dog"])
    with pytest.raises(DatasetError, match="Real classes with no synthetic images: melanoma"):
        match_labels(["nevus", "melanoma"], ["nevus"])


def test_label_map_file(tmp_path):
    good = tmp_path / "map.yaml"
    good.write_text("mole: nevus\nother: null\n")
    assert load_label_map(good) == {"mole": "nevus", "other": None}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- mole\n- nevus\n")
    with pytest.raises(RecipeError, match="synthetic name: real name"):
        load_label_map(bad)


def test_conditions_run_synthetic_arms_once_per_dataset():
    arms = preset_arms("ratio-sweep")[:2]  # ratio-0 (real only), ratio-0.5
    assert [c.name for c in conditions(arms, ["a/syn-sd15", "b/syn-sdxl"])] == ["ratio-0", "ratio-0.5@syn-sd15", "ratio-0.5@syn-sdxl"]
    assert [(c.name, c.synthetic) for c in conditions(arms, ["a/syn"])] == [("ratio-0", None), ("ratio-0.5", 0)]
    assert [c.name for c in conditions(arms, [])] == ["ratio-0"]  # the real baseline alone
    with pytest.raises(SkinsynthError, match="same folder name"):
        conditions(arms, ["a/syn", "b/syn"])
