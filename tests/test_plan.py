import collections
import itertools

import pytest
import yaml

from skinsynth.generate import batches
from skinsynth.plan import attempt_seed, plan, plan_split
from skinsynth.errors import RecipeError
from skinsynth.recipe import fill_template, load_recipe, parse_recipe

from .conftest import DEMO_RECIPE


def _jobs(split_plan):
    return split_plan.jobs(0, len(split_plan))


def test_same_recipe_same_plan():
    recipe = load_recipe(DEMO_RECIPE)
    assert _jobs(plan(recipe)["train"]) == _jobs(plan(load_recipe(DEMO_RECIPE))["train"])


def test_a_seed_depends_only_on_base_seed_split_and_index():
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    recipe = parse_recipe(data)
    full = plan_split(recipe, "train")
    assert list(plan_split(recipe, "train", limit=5).seeds) == list(full.seeds[:5])
    data["splits"]["train"] = {"per_class": 100}
    data["generation"]["shard_size"] = 3
    data["generation"]["guidance_scale"] = 9.0
    assert list(plan_split(parse_recipe(data), "train").seeds[: len(full)]) == list(full.seeds)
    assert len(set(full.seeds) | set(plan_split(recipe, "validation").seeds)) == len(full) + 6
    data["generation"]["seed"] = 99
    assert set(plan_split(parse_recipe(data), "train").seeds).isdisjoint(full.seeds)


def test_attempt_seeds_form_a_fixed_sequence():
    assert attempt_seed(42, 0) == 42
    retries = [attempt_seed(42, a) for a in range(1, 6)]
    assert retries == [attempt_seed(42, a) for a in range(1, 6)]
    assert len(set(retries)) == 5 and 42 not in retries


def test_classes_are_interleaved_and_prompts_filled():
    jobs = _jobs(plan(load_recipe(DEMO_RECIPE))["train"])
    assert [j.label for j in jobs[:6]] == [0, 1, 2, 0, 1, 2]
    assert collections.Counter(j.label for j in jobs) == {0: 8, 1: 8, 2: 8}
    for job in jobs:
        assert job.attributes["body_site"] in job.prompt and job.attributes["fitzpatrick"] in job.prompt
        assert ("melanoma", "melanocytic nevus", "basal cell carcinoma")[job.label] in job.prompt
        assert job.guidance_scale in (2.0, 4.0) and job.negative_prompt == "text, watermark, drawing"
    assert {j.guidance_scale for j in jobs} == {2.0, 4.0}


def test_a_class_free_negative_is_each_prompt_without_its_class():
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["prompts"] = {"templates": ["{class}, {body_site}, Fitzpatrick {fitzpatrick}"], "class_free_negative": True}
    recipe = parse_recipe(data)
    for job in _jobs(plan(recipe)["train"]):
        assert job.prompt == f"{recipe.classes[job.label].text}, {job.negative_prompt}"
        assert job.negative_prompt == f"{job.attributes['body_site']}, Fitzpatrick {job.attributes['fitzpatrick']}"
    # the same images otherwise: seeds and attributes do not depend on the negative prompts
    data["prompts"]["class_free_negative"] = False
    assert [(j.seed, j.attributes, j.prompt) for j in _jobs(plan(parse_recipe(data))["train"])] == [(j.seed, j.attributes, j.prompt) for j in _jobs(plan(recipe)["train"])]
    assert fill_template("{class}, {site}...", None, {"site": "back , face"}) == "back , face..."  # only the class's slot is tidied
    assert parse_recipe({**data, "prompts": {**data["prompts"], "class_free_negative": False}}).fingerprint() == parse_recipe(
        {**data, "prompts": {"templates": data["prompts"]["templates"]}}).fingerprint()  # false means left out
    data["prompts"]["negative"] = "blurry"
    data["prompts"]["class_free_negative"] = True
    with pytest.raises(RecipeError, match="either `negative`.*not both"):
        parse_recipe(data)


def test_balanced_attributes_cover_every_combination_equally():
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["splits"] = {"train": {"per_class": 36}}
    jobs = _jobs(plan(parse_recipe(data))["train"])
    for label in range(3):
        combos = collections.Counter((j.attributes["fitzpatrick"], j.attributes["body_site"]) for j in jobs if j.label == label)
        assert set(combos) == set(itertools.product(["I", "II", "III", "IV", "V", "VI"], ["back", "face", "lower extremity"]))
        assert set(combos.values()) == {2}


def test_weighted_attributes_follow_their_weights():
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["attributes"]["fitzpatrick"] = {"I": 0.0, "II": 1.0, "III": 3.0}
    data["splits"] = {"train": {"total": 4000, "attributes": "weighted"}}
    counts = collections.Counter(j.attributes["fitzpatrick"] for j in _jobs(plan(parse_recipe(data))["train"]))
    assert counts["I"] == 0
    assert abs(counts["III"] / 4000 - 0.75) < 0.03


def test_batches_cover_each_job_once_with_one_guidance_each():
    jobs = _jobs(plan(load_recipe(DEMO_RECIPE))["train"])
    for batch_size in (1, 3, 8, 100):
        grouped = batches(jobs, batch_size)
        assert sorted(j.index for b in grouped for j in b) == list(range(len(jobs)))
        assert all(len(b) <= batch_size and len({j.guidance_scale for j in b}) == 1 for b in grouped)
        assert [b[0].index for b in grouped] == sorted(b[0].index for b in grouped)


def test_an_empty_split_gets_no_shard():
    from skinsynth.generate import shard_tasks

    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["splits"]["test"] = {"per_class": 0}
    tasks = shard_tasks(plan(parse_recipe(data)), shard_size=10)
    assert [t.file for t in tasks] == ["data/train-00000-of-00003.arrow", "data/train-00001-of-00003.arrow", "data/train-00002-of-00003.arrow", "data/validation-00000-of-00001.arrow"]


def _per_class_recipe(**train):
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["attributes"]["body_site"] = {"back": 1, "face": 1, "lower extremity": 1}
    data["classes"][0]["attributes"] = {"body_site": {"back": 3, "face": 1}}  # melanoma: never on the legs
    data["classes"][1]["attributes"] = {"body_site": {"lower extremity": 1}}  # nevus: only on the legs
    data["splits"]["train"] = {"total": 3000, "attributes": "weighted", **train}
    return parse_recipe(data)


def test_per_class_attribute_weights_are_honoured_deterministically():
    from skinsynth.plan import expected_table, joint_fit

    recipe = _per_class_recipe()
    jobs = _jobs(plan_split(recipe, "train"))
    sites = {name: collections.Counter(j.attributes["body_site"] for j in jobs if recipe.label_names[j.label] == name) for name in recipe.label_names}
    assert set(sites["nevus"]) == {"lower extremity"} and set(sites["melanoma"]) == {"back", "face"}
    assert abs(sites["melanoma"]["back"] / sites["melanoma"].total() - 0.75) < 0.04
    assert len(sites["basal_cell_carcinoma"]) == 3  # no weights of its own: the attribute's uniform ones
    assert _jobs(plan_split(recipe, "train")) == jobs
    assert _jobs(plan_split(recipe, "train", limit=50)) == jobs[:50]  # a preview is the start of the full run
    assert [j.attributes["fitzpatrick"] for j in jobs] == [j.attributes["fitzpatrick"] for j in _jobs(plan_split(parse_recipe({**recipe.to_dict(), "classes": [
        {k: v for k, v in c.items() if k != "attributes"} for c in recipe.to_dict()["classes"]]}), "train"))]  # other attributes untouched
    assert expected_table(recipe, "train", "body_site")[("melanoma", "back")] == 0.25
    fit = joint_fit(recipe, "train")
    assert set(fit) == {"body_site"} and fit["body_site"]["distance"] < 2 * fit["body_site"]["noise"] and fit["body_site"]["images"] == 3000


def test_per_class_attribute_weights_are_validated():
    import pytest

    from skinsynth.errors import RecipeError

    data = _per_class_recipe().to_dict()
    for change, message in (({"colour": {"red": 1}}, "not in `attributes`"), ({"body_site": {"arm": 1}}, "not among"), ({"body_site": {"back": 0}}, "all be zero")):
        data["classes"][2]["attributes"] = change
        with pytest.raises(RecipeError, match=message):
            parse_recipe(data)
    data["classes"][2]["attributes"] = {"fitzpatrick": {1: 2}}
    with pytest.raises(RecipeError, match=r"\['1'\]"):  # number keys are read as text, like attribute values
        parse_recipe(data)
