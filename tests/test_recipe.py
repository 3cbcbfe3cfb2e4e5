import copy

import pytest
import yaml

from skinsynth.errors import RecipeError
from skinsynth.recipe import load_recipe, parse_recipe

from .conftest import DEMO_RECIPE


@pytest.fixture
def demo() -> dict:
    return yaml.safe_load(DEMO_RECIPE.read_text())


def test_demo_recipe_is_accepted_as_written():
    recipe = load_recipe(DEMO_RECIPE)
    assert recipe.label_names == ["melanoma", "nevus", "basal_cell_carcinoma"]
    assert recipe.classes[1].text == "melanocytic nevus"
    assert recipe.classes[0].text == "melanoma"
    assert recipe.attributes["fitzpatrick"].values == ("I", "II", "III", "IV", "V", "VI")
    assert recipe.generation.guidance_scales == (2.0, 4.0)
    assert recipe.class_counts("train") == [8, 8, 8]


def test_recipe_round_trips_through_yaml_and_hash_is_stable(demo, tmp_path):
    recipe = parse_recipe(demo)
    path = tmp_path / "again.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(path) == recipe
    assert load_recipe(path).fingerprint() == recipe.fingerprint()
    changed = copy.deepcopy(demo)
    changed["generation"]["seed"] = 1
    assert parse_recipe(changed).fingerprint() != recipe.fingerprint()


def test_weighted_attributes_and_totals(demo):
    demo["attributes"]["fitzpatrick"] = {"I": 1, "II": 3}
    demo["attributes"]["age"] = [30, 50]  # numbers become strings
    demo["classes"][0]["weight"] = 2
    demo["splits"] = {"train": {"total": 10, "attributes": "weighted"}}
    recipe = parse_recipe(demo)
    assert recipe.attributes["fitzpatrick"].weights == (1.0, 3.0)
    assert recipe.attributes["age"].values == ("30", "50")
    assert recipe.class_counts("train") == [5, 3, 2]


def _broken(demo, path, value):
    data = copy.deepcopy(demo)
    *parents, key = path
    node = data
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("prompts", "templates"), ["a photo of {class} on {site}"], "unknown placeholder(s) ['site']"),
        (("prompts", "templates"), ["a photo of {}"], "must be a plain name"),
        (("classes",), [], "`classes`"),
        (("classes",), [{"name": "melanoma"}, {"name": "melanoma"}], "duplicate class names ['melanoma']"),
        (("splits", "train"), {"per_class": -1}, "`splits.train.per_class`"),
        (("splits", "train"), {"per_class": 2, "total": 6}, "exactly one of"),
        (("generation", "scheduler"), "fancy", "unknown scheduler 'fancy'"),
        (("generation", "height"), "tall", "`generation.height`"),
        (("generation", "width"), 65, "multiple of 8"),
        (("generation", "image_format"), "gif", "`generation.image_format`"),
        (("generation", "guidance"), 3.0, "`generation.guidance`: unknown key"),
        (("colour",), "red", "`colour`: unknown key"),
        (("name",), KeyError, "`name`: Field required"),
        (("splits",), {"train-set": {"per_class": 1}}, "`splits.train-set"),
        (("attributes", "label"), ["a"], "reserved"),
    ],
)
def test_invalid_recipes_name_the_field(demo, path, value, expected):
    with pytest.raises(RecipeError) as error:
        parse_recipe(_broken(demo, path, value), source="r.yaml")
    assert expected in str(error.value)
    assert str(error.value).startswith("r.yaml: ")


def test_scheduler_aliases_and_class_names(demo):
    for name in ("ddim", "dpm++", "EulerDiscreteScheduler"):
        parse_recipe(_broken(demo, ("generation", "scheduler"), name))


def test_unreadable_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(bad)
