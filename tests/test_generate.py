"""End-to-end generation on the tiny pipeline: layout, round trip, resume after kill -9, locks, refusals, bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from skinsynth.cli import main
from skinsynth.errors import OutputError
from skinsynth.generate import generate
from skinsynth.pipeline import load_pipeline, tiny_pipeline
from skinsynth.plan import attempt_seed, plan_split
from skinsynth.recipe import load_recipe
from skinsynth.shards import sha256_file

from .conftest import DEMO_RECIPE, REPO


def small_recipe(tmp_path: Path, per_class: int = 6, shard_size: int = 4, **generation) -> Path:
    """The demo recipe at 32 px and 2 steps: fast enough to make a few dozen images in seconds."""
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["splits"] = {"train": {"per_class": per_class}, "validation": {"per_class": 1}}
    data["generation"].update({"height": 32, "width": 32, "num_inference_steps": 2, "shard_size": shard_size, **generation})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_rows(out: Path) -> dict[str, list[dict]]:
    """Every row of every shard, images as raw bytes, in file order."""
    rows = {}
    for shard in sorted((out / "data").glob("*.arrow")):
        split = shard.name.split("-")[0]
        with pa.memory_map(str(shard)) as source:
            rows.setdefault(split, []).extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def snapshot(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file() and ".skinsynth" not in p.parts}


@pytest.fixture(scope="module")
def demo_out(tiny_pipeline_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["-q", "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_output_loads_with_datasets(demo_out):
    from datasets import ClassLabel, load_dataset

    dataset = load_dataset(str(demo_out))
    assert set(dataset) == {"train", "validation"}
    assert dataset["train"].num_rows == 24 and dataset["validation"].num_rows == 6
    features = dataset["train"].features
    assert isinstance(features["label"], ClassLabel) and features["label"].names == ["melanoma", "nevus", "basal_cell_carcinoma"]
    assert set(features) == {"image", "label", "prompt", "negative_prompt", "seed", "guidance_scale", "num_inference_steps", "fitzpatrick", "body_site"}
    row = dataset["train"][0]
    assert row["image"].size == (64, 64) and row["image"].format == "PNG"
    assert dataset["train"]["label"][:6] == [0, 1, 2, 0, 1, 2]
    streamed = next(iter(load_dataset(str(demo_out), streaming=True)["validation"]))
    assert streamed["prompt"] == dataset["validation"][0]["prompt"]


def test_rows_match_the_plan_and_manifest_matches_files(demo_out):
    recipe = load_recipe(DEMO_RECIPE)
    rows = read_rows(demo_out)
    for split in ("train", "validation"):
        jobs = plan_split(recipe, split).jobs(0, 100)
        assert [(r["label"], r["prompt"], r["seed"], r["fitzpatrick"]) for r in rows[split]] == [
            (j.label, j.prompt, j.seed, j.attributes["fitzpatrick"]) for j in jobs
        ]
    manifest = json.loads((demo_out / "generation.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["identity"]["recipe_sha256"] == recipe.fingerprint()
    assert manifest["recipe"]["name"] == "skinsynth-demo" and manifest["library_versions"]["diffusers"]
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == [f"data/train-0000{i}-of-00003.arrow" for i in range(3)]
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert sha256_file(demo_out / shard["file"]) == shard["sha256"]
    assert not list((demo_out / "data").glob(".*"))


def test_rerunning_a_finished_run_changes_nothing(demo_out, tiny_pipeline_dir):
    before = snapshot(demo_out)
    assert main(["-q", "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--out", str(demo_out)]) == 0
    assert snapshot(demo_out) == before


def test_resume_after_kill_9_gives_identical_rows(tiny_pipeline_dir, tmp_path):
    recipe = small_recipe(tmp_path, per_class=12, shard_size=4)  # 10 shards: 9 train, 1 validation
    reference = tmp_path / "reference"
    generate(recipe, str(tiny_pipeline_dir), reference, batch_size=3, device="cpu", progress=False)

    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "skinsynth", "-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--out", str(out), "--batch-size", "3", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env)
    records = out / ".skinsynth" / "shards"
    # A random point: after 1 to 7 finished shards, then a random fraction of a shard (mid-batch, mid-encode, mid-rename).
    chance = random.Random()
    wait_for, delay = chance.randint(1, 7), chance.uniform(0.0, 0.3)
    deadline = time.monotonic() + 120
    while not (records.is_dir() and len(list(records.iterdir())) >= wait_for) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(list(records.iterdir()))
    assert not (out / "generation.json").is_file() or json.loads((out / "generation.json").read_text())["status"] == "incomplete", "killed too late"

    assert subprocess.run(command, env=env).returncode == 0
    assert read_rows(out) == read_rows(reference), f"differs after a kill {delay:.2f}s after shard {wait_for}, with {finished_before} shards done"
    assert json.loads((out / "generation.json").read_text())["splits"] == json.loads((reference / "generation.json").read_text())["splits"]


def test_a_second_writer_is_refused_by_the_lock(tiny_pipeline_dir, tmp_path):
    from filelock import FileLock

    out = tmp_path / "out"
    (out / ".skinsynth").mkdir(parents=True)
    with FileLock(str(out / ".skinsynth" / "lock")):
        with pytest.raises(OutputError, match="another `skinsynth generate` is writing"):
            generate(small_recipe(tmp_path), str(tiny_pipeline_dir), out, device="cpu", progress=False)
    assert not (out / "data").exists()


def test_another_recipe_or_model_into_the_same_folder_is_refused(tiny_pipeline_dir, tmp_path):
    recipe = small_recipe(tmp_path, per_class=1)
    out = tmp_path / "out"
    generate(recipe, str(tiny_pipeline_dir), out, device="cpu", progress=False)
    before = snapshot(out)

    (tmp_path / "other").mkdir()
    other_recipe = small_recipe(tmp_path / "other", per_class=2)
    with pytest.raises(OutputError, match="another recipe sha256"):
        generate(other_recipe, str(tiny_pipeline_dir), out, device="cpu", progress=False)
    other_model = tmp_path / "other-model"
    tiny_pipeline(other_model, seed=1)
    with pytest.raises(OutputError, match="another model"):
        generate(recipe, str(other_model), out, device="cpu", progress=False)
    with pytest.raises(OutputError, match="another limit"):
        generate(recipe, str(tiny_pipeline_dir), out, device="cpu", limit=1, progress=False)
    assert snapshot(out) == before


def test_safety_checker_blanks_are_regenerated_with_the_next_seed(tiny_pipeline_dir, tmp_path):
    recipe_path = small_recipe(tmp_path, per_class=2)
    recipe = load_recipe(recipe_path)
    pipe, info = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    planned = {int(s) for s in plan_split(recipe, "train").seeds[:3]}  # the first three train images are "unsafe" once

    class FlaggingPipeline:
        """Acts like a pipeline with a safety checker that blacks out images made from some seeds."""

        def __call__(self, generator, **kwargs):
            output = pipe(generator=generator, **kwargs)
            seeds = [g.initial_seed() for g in generator]
            flags = [seed in planned for seed in seeds]
            output.images[np.array(flags, dtype=bool)] = 0.0
            output.nsfw_content_detected = flags
            return output

    out = tmp_path / "out"
    manifest = generate(recipe, "tiny", out, device="cpu", progress=False, pipeline=(FlaggingPipeline(), info))
    assert manifest["rejections"] == {"safety_checker": 3}
    rows = read_rows(out)["train"]
    seeds = plan_split(recipe, "train").seeds
    assert [r["seed"] for r in rows[:4]] == [attempt_seed(int(s), 1) for s in seeds[:3]] + [int(seeds[3])]
    from PIL import Image
    import io

    assert all(np.asarray(Image.open(io.BytesIO(r["image"]["bytes"]))).max() > 0 for r in rows)


def test_two_processes_make_the_same_dataset_as_one(tiny_pipeline_dir, tmp_path):
    recipe = small_recipe(tmp_path, per_class=4, shard_size=3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # CPU float sums depend on the thread count
    arguments = ["-m", "skinsynth", "-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--batch-size", "2", "--device", "cpu", "--out"]
    single, double = tmp_path / "single", tmp_path / "double"
    assert subprocess.run([sys.executable, *arguments, str(single)], env=env).returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(random.randint(20000, 40000))]
    result = subprocess.run([*torchrun, *arguments, str(double)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_rows(double) == read_rows(single)
    records = [json.loads(p.read_text()) for p in (double / ".skinsynth" / "shards").iterdir()]
    assert len(records) == 4 + 1  # 12 train images in shards of 3, one validation shard: each written once
