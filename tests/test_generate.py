"""End-to-end generation on the tiny pipeline: layout, round trip, locks, refusals, bad input, several processes.

Resuming after `kill -9` at random moments is in tests/test_faults.py."""

import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from skinsynth.cli import main
from skinsynth.errors import OutputError
from skinsynth.generate import generate
from skinsynth.pipeline import load_pipeline
from skinsynth.tiny import tiny_pipeline
from skinsynth.plan import attempt_seed, plan_split
from skinsynth.recipe import load_recipe, parse_recipe
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
    """Also what README.md's commands for diffusers' and transformers' training scripts name: `image`, `prompt`, the
    ClassLabel `label`, and a `validation` split."""
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


def test_the_command_line_runs_clean_with_future_warnings_as_errors(tiny_pipeline_dir, tmp_path):
    """Library deprecations reach the user (the CLI hides none), and skinsynth itself uses no deprecated argument
    (e.g. diffusers' `torch_dtype`) of the installed versions."""
    out = tmp_path / "out"
    command = [sys.executable, "-W", "error::FutureWarning", "-m", "skinsynth", "-q", "generate", str(small_recipe(tmp_path, per_class=1)), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]


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
    with pytest.raises(OutputError, match="another recipe "):
        generate(other_recipe, str(tiny_pipeline_dir), out, device="cpu", progress=False)
    other_model = tmp_path / "other-model"
    tiny_pipeline(other_model, seed=1)
    with pytest.raises(OutputError, match=r"another --model \(the folder.s files changed\)"):
        generate(recipe, str(other_model), out, device="cpu", progress=False)
    with pytest.raises(OutputError, match="another --limit "):
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


def test_two_processes_with_one_slowed_make_the_same_dataset_as_one(tiny_pipeline_dir, tmp_path):
    """Rank 1 is slowed after every collective call (tests/slow_rank.py): with the work listed by each rank after the
    barrier, rank 0 would finish shards before rank 1 looked, and shards would be written twice or by no one."""
    recipe = small_recipe(tmp_path, per_class=4, shard_size=3)
    calls = tmp_path / "calls"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SKINSYNTH_TEST_CALLS": str(calls)}  # CPU sums depend on threads
    arguments = ["-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--batch-size", "2", "--device", "cpu", "--out"]
    single, double = tmp_path / "single", tmp_path / "double"
    assert subprocess.run([sys.executable, "-m", "skinsynth", *arguments, str(single)], env=env).returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(random.randint(20000, 40000))]
    result = subprocess.run([*torchrun, str(REPO / "tests" / "slow_rank.py"), *arguments, str(double)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_rows(double) == read_rows(single)
    written = sorted(calls.read_text().split())
    assert written == sorted(set(written)) and len(written) == 4 + 1, written  # 4 train shards + 1 validation, each once
    assert {line.split(":")[0] for line in calls.read_text().split()} == {"0", "1"}  # both ranks worked


@pytest.mark.slow
def test_a_locked_run_refuses_every_process(tiny_pipeline_dir, tmp_path):
    """The main process holds the lock for all of them: when it cannot get it, every process stops, none waits."""
    from filelock import FileLock

    out = tmp_path / "out"
    (out / ".skinsynth").mkdir(parents=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(random.randint(20000, 40000))]
    command = [*torchrun, "-m", "skinsynth", "-q", "generate", str(small_recipe(tmp_path, per_class=1)), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--out", str(out)]
    with FileLock(str(out / ".skinsynth" / "lock")):
        result = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count("error: another `skinsynth generate` is writing") == 2, result.stderr[-3000:]
    assert sorted(p.name for p in out.rglob("*")) == [".skinsynth", "lock", "shards"]


@pytest.mark.slow
@pytest.mark.parametrize(("failing", "message", "exit_code"), [("1:shortfall", "rank 1 came up short", 2), ("0:bug", "RuntimeError: rank 0 broke", 1)])
def test_a_failing_rank_stops_every_rank_with_its_message_and_exit_code(failing, message, exit_code, tiny_pipeline_dir, tmp_path):
    """One rank raises in its first shard (tests/failing_rank.py) while the other works on or waits at the barrier:
    every rank prints the failing rank's message and exits with its code (2: bad input, 1: anything else)."""
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SKINSYNTH_TEST_FAIL": failing}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(random.randint(20000, 40000))]
    arguments = ["-q", "generate", str(small_recipe(tmp_path, per_class=4, shard_size=3)), "--model", str(tiny_pipeline_dir), "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "out")]
    started = time.monotonic()
    result = subprocess.run([*launch, str(REPO / "tests" / "failing_rank.py"), *arguments], env=env, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - started < 60, result.stderr[-3000:]
    assert result.returncode != 0
    assert result.stderr.count(message) == 2, result.stderr[-3000:]  # the failing rank's own error, and the other rank's
    assert sorted(re.findall(r"^ *exitcode *: (-?\d+)", result.stderr, flags=re.M)) == [str(exit_code)] * 2, result.stderr[-3000:]  # the launcher's report


def test_a_foreign_folder_is_refused_before_a_byte_is_written(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    (project / "main.py").write_text("print('hi')\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    recipe = small_recipe(tmp_path, per_class=1)
    before[recipe] = recipe.read_bytes()
    with pytest.raises(OutputError, match=r"is not empty \(README.md, main.py\) and holds no `skinsynth generate` run"):
        generate(recipe, str(tiny_pipeline_dir), project, device="cpu", progress=False)
    monkeypatch.chdir(project)
    assert main(["-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--out", ""]) == 2
    assert capsys.readouterr().err.strip() == "error: `--out` is empty; name the dataset folder (a new or empty one, or an unfinished run to resume)"
    assert main(["-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--out", "."]) == 2
    assert "holds no `skinsynth generate` run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written, nothing created


def test_resuming_with_another_batch_size_or_without_the_filter_is_refused(tiny_pipeline_dir, tmp_path):
    from skinsynth.run_folder import identity_difference

    recipe = small_recipe(tmp_path, per_class=1)
    out = tmp_path / "out"
    generate(recipe, str(tiny_pipeline_dir), out, device="cpu", batch_size=2, progress=False)
    before = snapshot(out)
    with pytest.raises(OutputError, match=r"another --batch-size \(batch_size: 2, now 3\)"):
        generate(recipe, str(tiny_pipeline_dir), out, device="cpu", batch_size=3, progress=False)
    manifest = json.loads((out / "generation.json").read_text())
    manifest["identity"]["filter"] = {"classifiers": ["clf"], "thresholds": {"melanoma": 0.5}}  # as a filtered run records it
    (out / "generation.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match=r"another filter \(--filter-\* options\) \(filter: \{.*\}, now '<absent>'\)"):
        generate(recipe, str(tiny_pipeline_dir), out, device="cpu", batch_size=2, progress=False)
    del manifest["identity"]["filter"], manifest["identity"]["model"]["lora"]  # a key missing on the old side differs too
    (out / "generation.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match=r"another --lora \(lora: '<absent>', now None\)"):
        generate(recipe, str(tiny_pipeline_dir), out, device="cpu", batch_size=2, progress=False)
    assert identity_difference({"a": 1}, {"a": 1, "b": None}) == ("b", "<absent>", None)
    assert identity_difference({"a": 1, "b": 2}, {"a": 1}) == ("b", 2, "<absent>")
    assert identity_difference({"model": {"dtype": "float32", "lora": None}}, {"model": {"dtype": "float16", "lora": None}}) == ("dtype", "float32", "float16")
    assert {k: v for k, v in snapshot(out).items() if k != "generation.json"} == {k: v for k, v in before.items() if k != "generation.json"}


def test_finishing_resumes_and_verify_notices_a_missing_card(tiny_pipeline_dir, tmp_path):
    """A kill right after `generation.json` says complete leaves no card: the same command makes it, verify refuses
    the dataset until then."""
    from skinsynth.errors import DatasetError
    from skinsynth.verify import verify_dataset

    recipe = small_recipe(tmp_path, per_class=1)
    out = tmp_path / "out"
    generate(recipe, str(tiny_pipeline_dir), out, device="cpu", progress=False)
    complete = snapshot(out)
    for name, what in (("README.md", "dataset card"), ("sample_grid.png", "sample grid")):
        (out / name).unlink()
        with pytest.raises(DatasetError, match=f"the {what} `{name}` is missing"):
            verify_dataset(out)
        generate(recipe, str(tiny_pipeline_dir), out, device="cpu", progress=False)
        assert snapshot(out) == complete
    verify_dataset(out)


def test_negatives_a_trained_model_never_learned_are_warned_about(caplog):
    """A scratch model's unconditional input is the empty caption, and the class-free caption exists only for a model
    trained with --class-dropout: guiding against anything else pushes it away from text it does not know."""
    from skinsynth.generate import _warn_about_unlearned_negatives

    data = yaml.safe_load(DEMO_RECIPE.read_text())
    negative, class_free = parse_recipe(data), parse_recipe({**data, "prompts": {**data["prompts"], "negative": "", "class_free_negative": True}})
    scratch = {"method": "scratch", "hyperparameters": {"class_dropout": 0.1}}
    cases = [(negative, scratch, "never with a negative prompt"), (class_free, {"method": "scratch", "hyperparameters": {}}, "from scratch without `--class-dropout`"),
             (class_free, {"method": "lora", "hyperparameters": {}}, None), (class_free, scratch, None), (negative, {}, None)]  # a fine-tuned base reads any text
    for recipe, finetune, warning in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="skinsynth"):
            _warn_about_unlearned_negatives(recipe, finetune, "model")
        assert (warning in caplog.text) if warning else not caplog.text
