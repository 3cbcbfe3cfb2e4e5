"""Bad input gets one clear `error:` line and exit code 2, and leaves what is already written untouched."""

import json

import pytest
import yaml

from skinsynth.cli import build_parser, main
from skinsynth.shards import sha256_file

from .conftest import DEMO_RECIPE


def run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-q", *argv])
    return code, capsys.readouterr().err


@pytest.fixture
def finished(tiny_pipeline_dir, tmp_path):
    """A small finished dataset whose files must survive every bad command aimed at it."""
    out = tmp_path / "out"
    assert main(["-q", "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--out", str(out), "--limit", "2"]) == 0
    files = {p: sha256_file(p) for p in out.rglob("*") if p.is_file() and p.name != "lock"}
    yield out
    assert {p: sha256_file(p) for p in out.rglob("*") if p.is_file() and p.name != "lock"} == files


def test_missing_model_path(capsys, finished):
    code, err = run(capsys, "generate", str(DEMO_RECIPE), "--model", "./no/such/model", "--out", str(finished), "--limit", "2")
    assert code == 2 and err.strip() == "error: model path `./no/such/model` does not exist"


def test_folder_that_is_not_a_pipeline(capsys, finished, tmp_path):
    code, err = run(capsys, "generate", str(DEMO_RECIPE), "--model", str(tmp_path), "--out", str(finished), "--limit", "2")
    assert code == 2 and "has no model_index.json" in err and err.count("\n") == 1


def test_pipeline_that_is_not_text_to_image(capsys, finished, tiny_pipeline_dir, tmp_path):
    import shutil

    img2img = tmp_path / "img2img"
    shutil.copytree(tiny_pipeline_dir, img2img)
    index = json.loads((img2img / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionImg2ImgPipeline"
    (img2img / "model_index.json").write_text(json.dumps(index))
    code, err = run(capsys, "generate", str(DEMO_RECIPE), "--model", str(img2img), "--out", str(finished), "--limit", "2")
    assert code == 2 and "is not a text-to-image pipeline" in err


def test_unwritable_output(capsys, tiny_pipeline_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run(capsys, "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--out", str(blocker / "out"))
    assert code == 2 and "cannot create output directory" in err
    assert blocker.read_text() == "not a folder"


def test_batch_size_zero(capsys, finished, tiny_pipeline_dir):
    code, err = run(capsys, "generate", str(DEMO_RECIPE), "--model", str(tiny_pipeline_dir), "--out", str(finished), "--batch-size", "0")
    assert code == 2 and "`--batch-size` must be at least 1, got 0" in err


def test_invalid_recipe_fails_before_any_model_loads(capsys, tmp_path):
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["generation"]["steps"] = 4
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(data))
    code, err = run(capsys, "generate", str(recipe), "--model", "./missing-model", "--out", str(tmp_path / "out"))
    assert code == 2 and err.strip() == f"error: {recipe}: `generation.steps`: unknown key"
    assert not (tmp_path / "out").exists()


def test_every_command_has_help_with_an_example(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"generate", "tiny-pipeline"} <= set(commands)
    for name, command in commands.items():
        assert command.description, f"`skinsynth {name}` has no description"
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
    assert "Example:" in commands["generate"].epilog


def test_a_recorded_command_carries_no_absolute_local_path(tmp_path, monkeypatch):
    """`benchmark` writes its command into config.json and the dataset card: absolute paths (a user's home, a mount)
    become relative to where it ran; Hub ids and options stay as typed."""
    from skinsynth.cli import recorded_command

    monkeypatch.chdir(tmp_path / "..")
    argv = ["-q", "benchmark", "--real", str(tmp_path / "real"), f"--out={tmp_path / 'out'}", "--model", "microsoft/resnet-50", "--synthetic", "./twin"]
    assert recorded_command(argv) == f"skinsynth -q benchmark --real {tmp_path.name}/real --out={tmp_path.name}/out --model microsoft/resnet-50 --synthetic ./twin"
