"""`skinsynth recipe-from`: a recipe whose classes and attribute weights match a real train split, and that loads back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from skinsynth.cli import main
from skinsynth.errors import OutputError, SkinsynthError
from skinsynth.plan import plan
from skinsynth.prepare import prepare
from skinsynth.recipe import load_recipe, template_fields
from skinsynth.recipe_from import default_templates, recipe_from


@pytest.fixture(scope="module")
def real(ham_subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real") / "ham"
    prepare(ham_subset, "ham10000", out, progress=False)
    return out


@pytest.fixture(scope="module")
def train(real):
    from datasets import load_dataset

    return load_dataset(str(real), split="train").remove_columns("image")


def test_twin_matches_the_train_split(real, train, tmp_path):
    recipe = recipe_from(real, tmp_path / "twin.yaml")
    names = train.features["label"].names
    counts = Counter(train["label"])
    assert recipe.label_names == [n for i, n in enumerate(names) if counts[i]]
    assert recipe.class_counts("train") == [counts[i] for i, n in enumerate(names) if counts[i]]
    assert recipe.classes[names.index("basal_cell_carcinoma")].text == "basal cell carcinoma"
    assert set(recipe.attributes) == {"body_site", "sex", "age"}
    for attribute, spec in recipe.attributes.items():
        frequencies = Counter(v for v in train[attribute] if v is not None)
        assert dict(zip(spec.values, spec.weights)) == frequencies
    assert [float(v) for v in recipe.attributes["age"].values] == sorted(float(v) for v in recipe.attributes["age"].values)
    assert all(template_fields(t) == {"class", "body_site", "sex", "age"} for t in recipe.prompts.templates)
    assert {s.attributes for s in recipe.splits.values()} == {"weighted"} and set(recipe.splits) == {"train", "validation"}
    assert (recipe.generation.width, recipe.generation.height) == (512, 512)
    assert recipe.license == "cc-by-nc-sa-4.0"
    assert load_recipe(tmp_path / "twin.yaml") == recipe  # round trip


def test_planned_twin_has_the_real_distribution(real, train):
    """What `generate` would make from the twin: the class counts exactly, the attribute mix in proportion."""
    twin = plan(recipe_from(real, total=4000), limit=None)["train"]
    jobs = twin.jobs(0, len(twin))
    names = train.features["label"].names
    real_labels = Counter(names[i] for i in train["label"])
    planned_labels = Counter(twin.recipe.label_names[j.label] for j in jobs)
    for name, n in real_labels.items():
        assert abs(planned_labels[name] / 4000 - n / len(train)) < 0.001
    real_sites = Counter(v for v in train["body_site"] if v is not None)
    planned_sites = Counter(j.attributes["body_site"] for j in jobs)
    for site, n in real_sites.items():
        assert abs(planned_sites[site] / 4000 - n / real_sites.total()) < 0.03, site
    assert all("{" not in j.prompt and "None" not in j.prompt for j in jobs)


def test_scaling_and_options(real, tmp_path):
    balanced = recipe_from(real, per_class=10, size=256, guidance_scale=2.5, attributes=["body_site"], templates=["a dermoscopic image of {class} on the {body_site}"])
    assert set(balanced.class_counts("train")) == {10} and balanced.generation.height == 256 and balanced.generation.guidance_scales == (2.5,)
    assert list(balanced.attributes) == ["body_site"] and balanced.prompts.templates == ("a dermoscopic image of {class} on the {body_site}",)
    scaled = recipe_from(real, total=100)
    assert sum(scaled.class_counts("train")) == 100
    full = recipe_from(real)
    biggest = max(range(len(full.classes)), key=lambda i: full.class_counts("train")[i])
    assert max(range(len(scaled.classes)), key=lambda i: scaled.class_counts("train")[i]) == biggest
    with pytest.raises(SkinsynthError, match="not both"):
        recipe_from(real, per_class=1, total=1)
    with pytest.raises(SkinsynthError, match="multiple of 8"):
        recipe_from(real, size=100)
    with pytest.raises(SkinsynthError, match="no column"):
        recipe_from(real, attributes=["colour"])
    (tmp_path / "exists.yaml").write_text("x")
    with pytest.raises(OutputError, match="--overwrite"):
        recipe_from(real, tmp_path / "exists.yaml")


def test_default_templates_read_well():
    assert default_templates([]) == ["a dermatology image of {class}", "{class}"]
    assert default_templates(["age", "lesion_size", "fitzpatrick", "body_site"])[0] == (
        "a dermatology image of {class}, on the {body_site}, Fitzpatrick skin type {fitzpatrick}, age {age}, lesion size {lesion_size}"
    )


def test_cli(real, tmp_path, capsys):
    assert main(["-q", "recipe-from", str(real), "--out", str(tmp_path / "r.yaml"), "--total", "70"]) == 0
    assert "7 classes" in capsys.readouterr().out
    assert sum(load_recipe(tmp_path / "r.yaml").class_counts("train")) == 70
    assert main(["-q", "recipe-from", str(tmp_path / "absent"), "--out", str(tmp_path / "s.yaml")]) == 2
    assert "error:" in capsys.readouterr().err
