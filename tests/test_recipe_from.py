"""`skinsynth recipe-from`: a recipe whose classes and attribute weights match a real train split, and that loads back."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from skinsynth.cli import main
from skinsynth.errors import OutputError, SkinsynthError
from skinsynth.plan import plan
from skinsynth.prepare import prepare
from skinsynth.recipe import load_recipe, template_fields
from skinsynth.recipe_from import age_band, default_templates, recipe_from, source_name


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
        frequencies = Counter(age_band(v) if attribute == "age" else v for v in train[attribute] if v is not None)
        assert dict(zip(spec.values, spec.weights)) == frequencies
        for class_spec in recipe.classes:  # each class's own weights are its train counts
            label = names.index(class_spec.name)
            own = Counter(age_band(v) if attribute == "age" else v for v, y in zip(train[attribute], train["label"]) if y == label and v is not None)
            assert (class_spec.attributes or {}).get(attribute, {}) == own
    assert all(re.fullmatch(r"\d+-\d+", v) for v in recipe.attributes["age"].values)
    assert [int(v.split("-")[0]) for v in recipe.attributes["age"].values] == sorted(int(v.split("-")[0]) for v in recipe.attributes["age"].values)
    assert recipe.name == "HAM10000-synthetic" and recipe.description.startswith("Synthetic twin of HAM10000 (train split")
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


def test_ages_go_in_decades_and_sources_are_named_not_located(tmp_path):
    assert [age_band(v) for v in ("0", "5.0", "47", "80.0", "40-49")] == ["0-9", "0-9", "40-49", "80-89", "40-49"]
    assert source_name("someone/ham10000") == "someone/ham10000"
    assert source_name(str(tmp_path)) == tmp_path.name  # a folder without a manifest: its name, not its path


def test_default_templates_read_well():
    assert default_templates([]) == ["a dermatology image of {class}", "{class}"]
    assert default_templates(["age", "lesion_size", "fitzpatrick", "body_site"])[0] == (
        "a dermatology image of {class}, on the {body_site}, Fitzpatrick skin type {fitzpatrick}, age {age}, lesion size {lesion_size}"
    )


def test_cli(real, tmp_path, capsys):
    assert main(["-q", "recipe-from", str(real), "--out", str(tmp_path / "r.yaml"), "--total", "70"]) == 0
    assert "7 classes" in capsys.readouterr().out
    assert sum(load_recipe(tmp_path / "r.yaml").class_counts("train")) == 70
    assert load_recipe(tmp_path / "r.yaml").prompts.class_free_negative is None
    assert main(["-q", "recipe-from", str(real), "--out", str(tmp_path / "c.yaml"), "--total", "70", "--class-free-negative"]) == 0
    free = load_recipe(tmp_path / "c.yaml")
    assert free.prompts.class_free_negative and free.negative_prompt("{class}, on the {body_site}", {"body_site": "back"}) == "on the back"
    assert main(["-q", "recipe-from", str(tmp_path / "absent"), "--out", str(tmp_path / "s.yaml")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ham_train(ham10000_dir, tmp_path_factory):
    """All of HAM10000 prepared (duplicate detection off: not what is tested here, and it halves the time)."""
    from datasets import load_dataset

    out = tmp_path_factory.mktemp("ham-full") / "ham10000"
    prepare(ham10000_dir, "ham10000", out, progress=False, dedup=False)
    return out, load_dataset(str(out), split="train").remove_columns("image")


def test_twin_of_all_of_ham10000_matches_the_class_by_site_table(ham_train):
    """The planned twin's class x body-site table is within sampling noise of the real train split's; drawing each
    attribute independently of the class (what twins did before) is many times further off."""
    from skinsynth.plan import joint_fit, total_variation
    from skinsynth.recipe import parse_recipe

    real, train = ham_train
    names = train.features["label"].names
    pairs = [(names[y], site) for y, site in zip(train["label"], train["body_site"]) if site is not None]
    recipe = recipe_from(real)
    planned = plan(recipe)["train"]
    sites = [recipe.attributes["body_site"].values[c] for c in planned.attribute_codes["body_site"]]
    planned_pairs = [(recipe.label_names[k], site) for k, site in zip(planned.labels, sites)]

    def table(items):
        counts = Counter(items)
        return {key: n / len(items) for key, n in counts.items()}

    # The real table over known sites, with each class at its share of the whole split (images without a site included).
    class_share = Counter(names[y] for y in train["label"])
    real_table = {(label, site): n / Counter(p[0] for p in pairs)[label] * class_share[label] / len(train) for (label, site), n in Counter(pairs).items()}
    fit = joint_fit(recipe, "train")["body_site"]
    distance = total_variation(real_table, table(planned_pairs))
    assert distance < 1.5 * fit["noise"], (distance, fit)
    assert abs(distance - fit["distance"]) < 0.01

    marginal_only = parse_recipe({**recipe.to_dict(), "classes": [{k: v for k, v in c.items() if k != "attributes"} for c in recipe.to_dict()["classes"]]})
    independent = plan(marginal_only)["train"]
    sites = [recipe.attributes["body_site"].values[c] for c in independent.attribute_codes["body_site"]]
    assert total_variation(real_table, table([(recipe.label_names[k], s) for k, s in zip(independent.labels, sites)])) > 5 * fit["noise"]


def test_the_twin_card_reports_the_distance(real, tiny_pipeline_dir, tmp_path, capsys, one_torch_thread):
    from skinsynth.generate import generate

    assert main(["-q", "recipe-from", str(real), "--out", str(tmp_path / "twin.yaml"), "--total", "24", "--size", "64", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "planned class x body_site table: total-variation distance" in printed and "sampling noise at 24 images" in printed
    generate(str(tmp_path / "twin.yaml"), str(tiny_pipeline_dir), tmp_path / "twin", batch_size=8, progress=False, device="cpu")
    card = (tmp_path / "twin" / "README.md").read_text()
    assert re.search(r"- class × `body_site`: 0\.\d{4} \(noise 0\.\d{4}, 2\d images\)", card), card
    assert "Synthetic twin of HAM10000" in card and "/tmp" not in card.split("---")[2][:2000]
