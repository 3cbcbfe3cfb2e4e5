"""Ctrl-C during start-up and SIGTERM (what batch schedulers send first) end `skinsynth generate` with one line that
says how to resume, the right exit code and no traceback; a start cut short leaves no output folder behind, and a
terminated run resumes to completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from skinsynth.cli import main

from .conftest import DEMO_RECIPE


def start(recipe: Path, model: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "skinsynth", "-q", "generate", str(recipe), "--model", str(model), "--out", str(out), "--batch-size", "1"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(process: subprocess.Popen, path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture
def recipe(tmp_path) -> Path:
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    data["splits"] = {"train": {"per_class": 4}}
    data["generation"]["shard_size"] = 2
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_ctrl_c_while_the_model_loads_leaves_nothing(recipe, tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    import skinsynth.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skinsynth.pipeline, "load_pipeline", interrupted)
    out = tmp_path / "deeper" / "out"
    assert main(["-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted; run the same command again to resume"]
    assert not (tmp_path / "deeper").exists()


@pytest.mark.slow
def test_sigterm_says_how_to_resume_and_the_run_resumes(recipe, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    process = start(recipe, tiny_pipeline_dir, out)
    try:
        wait_for(process, out / "generation.json")  # generating
        process.terminate()
        _, err = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated; run the same command again to resume"
    assert "Traceback" not in err
    assert not list((out / "data").glob(".*.tmp"))  # the shard being written was cleaned up
    resumed = start(recipe, tiny_pipeline_dir, out)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert len(list((out / "data").glob("train-*.arrow"))) == 6
