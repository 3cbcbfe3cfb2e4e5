"""Fault suite: `kill -9` at random moments of generate, prepare, finetune and push, then the same command again gives
what an uninterrupted run gives; a second finetune into a running one is refused; every kind of damage to a finished
dataset is caught by `verify` and stops `push` before any request; paths read from files stay inside their root.

Each kill test draws its moment from a seeded `random.Random`: SKINSYNTH_FAULT_RUNS (default 2) seeds per command run
in CI each time; `SKINSYNTH_FAULT_RUNS=20 pytest tests/test_faults.py` is the long run whose counts README.md reports.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from skinsynth.cli import main
from skinsynth.errors import DatasetError, OutputError
from skinsynth.finetune import finetune
from skinsynth.generate import generate
from skinsynth.hub import push_to_hub
from skinsynth.prepare import prepare
from skinsynth.shards import atomic_write_json, sha256_file
from skinsynth.verify import verify_dataset

from .conftest import REPO
from .test_finetune import FAST, RECIPE, write_real_dataset
from .test_generate import small_recipe
from .test_hub import FakeHub

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEEDS = range(int(os.environ.get("SKINSYNTH_FAULT_RUNS", "2")))
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # CPU float sums depend on the thread count


def kill_at(command: list[str], ready, delay: float, timeout: float = 300) -> subprocess.Popen:
    """Start `command`, wait until `ready()` (a point of progress) or the end, `delay` seconds more, then `kill -9`."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process


def files(root: Path, volatile: dict[str, tuple[str, ...]]) -> dict[str, object]:
    """Every file under `root` outside hidden folders, by content; the JSON files in `volatile` without those keys."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            if str(relative) in volatile:
                data = json.loads(path.read_text())
                found[str(relative)] = {k: v for k, v in data.items() if k not in volatile[str(relative)]}
            else:
                found[str(relative)] = sha256_file(path)
    return found


# ---------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def generated_reference(tiny_pipeline_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faults-generate")
    recipe = small_recipe(root, per_class=12, shard_size=4)  # 10 shards: 9 train, 1 validation
    reference = root / "reference" / "out"  # the card names the folder: the same name as the killed run's
    generate(recipe, str(tiny_pipeline_dir), reference, batch_size=3, device="cpu", progress=False)
    return recipe, reference


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_generate_killed_at_a_random_moment_resumes_to_the_same_files(seed, generated_reference, tiny_pipeline_dir, tmp_path):
    """From the first shard to the card: after 0 to 10 of the 10 shards, then up to half a second more (mid-batch,
    mid-encode, mid-rename, mid-manifest, mid-card). The resumed run's files equal an uninterrupted run's, byte for
    byte, apart from generation.json's `run` section (times)."""
    recipe, reference = generated_reference
    out = tmp_path / "killed" / "out"  # the reference's depth: the manifest names the model relative to the folder
    command = [sys.executable, "-m", "skinsynth", "-q", "generate", str(recipe), "--model", str(tiny_pipeline_dir), "--out", str(out), "--batch-size", "3", "--device", "cpu"]
    records = out / ".skinsynth" / "shards"
    chance = random.Random(seed)
    shards, delay = chance.randint(0, 10), chance.uniform(0.0, 0.5)
    kill_at(command, lambda: records.is_dir() and len(list(records.glob("*.json"))) >= shards, delay)
    assert subprocess.run(command, env=ENV).returncode == 0
    volatile = {"generation.json": ("run",)}
    assert files(out, volatile) == files(reference, volatile), f"seed {seed}: killed {delay:.2f} s after shard {shards}"
    verify_dataset(out)


# ---------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def prepared_reference(ham_subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults-prepare") / "out"  # the card names the folder: the same name as the killed run's
    prepare(ham_subset, "ham10000", out, progress=False, shard_size=10)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_prepare_killed_midway_is_rerun_without_leftovers(seed, ham_subset, prepared_reference, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "skinsynth", "-q", "prepare", str(ham_subset), "--format", "ham10000", "--out", str(out), "--shard-size", "10"]
    delay = random.Random(seed).uniform(0.0, 1.0)
    kill_at(command, lambda: any(tmp_path.glob(".out.prepare-*")), delay)
    assert subprocess.run([*command, "--overwrite"], env=ENV).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], f"seed {seed}: left behind after a kill {delay:.2f} s into writing"
    volatile = {"prepare.json": ("created", "seconds")}
    assert files(out, volatile) == files(prepared_reference, volatile)


# ---------------------------------------------------------------- finetune


@pytest.fixture(scope="module")
def finetune_inputs(ham10000_dir, tiny_pipeline_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-finetune")
    data = write_real_dataset(root / "ham", ham10000_dir)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    straight = finetune(str(tiny_pipeline_dir), data, recipe, root / "straight", method="lora", max_steps=6, learning_rate=1e-2, checkpoint_every=2, **FAST)
    return data, recipe, straight


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_finetune_is_locked_and_killed_resumes_to_the_same_weights(seed, finetune_inputs, tiny_pipeline_dir, tmp_path, capsys):
    data, recipe, straight = finetune_inputs
    out = tmp_path / "out"
    options = ["--base", str(tiny_pipeline_dir), "--data", str(data), "--recipe", str(recipe), "--method", "lora", "--out", str(out),
               "--max-steps", "6", "--learning-rate", "1e-2", "--checkpoint-every", "2", "--resolution", "32", "--batch-size", "4", "--validation-images", "0"]
    command = [sys.executable, "-m", "skinsynth", "-q", "finetune", *options]
    checkpoints = tmp_path / "out.checkpoints"
    chance = random.Random(seed)
    saved, delay = chance.randint(0, 3), chance.uniform(0.0, 0.5)
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "finetune_config.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended before the second started"
        # A second run into the same folder, while the first trains: refused, and the first is left alone.
        assert main(["-q", "finetune", *options, "--resume"]) == 2
        assert f"another `skinsynth finetune` is writing to `{out}`" in capsys.readouterr().err
        while not (checkpoints.is_dir() and len(list(checkpoints.glob("checkpoint-*"))) >= min(saved, 2)) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = finetune(str(tiny_pipeline_dir), data, recipe, out, method="lora", max_steps=6, learning_rate=1e-2, checkpoint_every=2, resume=True, **FAST)
    assert resumed.losses == straight.losses, f"seed {seed}: killed {delay:.2f} s after checkpoint {saved}"
    a, b = (load_file(d / "pytorch_lora_weights.safetensors") for d in (straight.out, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- push


@pytest.fixture(scope="module")
def pushable(tiny_pipeline_dir, tmp_path_factory) -> Path:
    """7 shards of one image each (4 train, 3 validation)."""
    root = tmp_path_factory.mktemp("faults-push")
    recipe = small_recipe(root, per_class=2, shard_size=1)
    out = root / "dataset"
    generate(recipe, str(tiny_pipeline_dir), out, batch_size=2, limit=4, device="cpu", progress=False)
    return out


def remote(state: Path) -> FakeHub:
    hub = FakeHub()
    if (state / "hub.pkl").is_file():
        hub.__dict__.update(pickle.loads((state / "hub.pkl").read_bytes()))
    return hub


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_push_killed_at_a_random_moment_resumes_to_the_same_repo(seed, pushable, tmp_path):
    """Against tests/hub_double.py: the FakeHub of tests/test_hub.py with its repo kept on disk, one commit at a time."""
    state = tmp_path / "hub"
    state.mkdir()
    command = [sys.executable, str(REPO / "tests" / "hub_double.py"), str(state), "-q", "push", str(pushable), "me/demo", "--shards-per-commit", "1"]
    shards = [s["file"] for split in json.loads((pushable / "generation.json").read_text())["splits"].values() for s in split["shards"]]
    chance = random.Random(seed)
    commits, delay = chance.randint(0, len(shards)), chance.uniform(0.0, 0.3)
    kill_at(command, lambda: len(remote(state).commits) >= commits, delay)
    assert subprocess.run(command, env=ENV).returncode == 0
    hub = remote(state)
    expected = [*shards, "generation.json", "sample_grid.png", "README.md"]
    assert {path: entry["data"] for path, entry in hub.refs["main"].items() if path != ".gitattributes"} == {path: (pushable / path).read_bytes() for path in expected}
    assert "README.md" in hub.commits[-1]["added"]  # the card went up last
    assert max(hub.uploaded.count(s) for s in shards) <= 2  # at most the shard of the commit the kill interrupted goes up again


# ---------------------------------------------------------------- damage corpus


def _manifest(root: Path, change) -> None:
    manifest = json.loads((root / "generation.json").read_text())
    change(manifest)
    atomic_write_json(root / "generation.json", manifest)


def _first_shard(manifest: dict) -> dict:
    return manifest["splits"]["train"]["shards"][0]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


SHARD = "data/train-00000-of-00004.arrow"
OTHER = "data/train-00001-of-00004.arrow"
DAMAGE = {  # kind -> (damage, what the error says)
    "missing shard": (lambda r: (r / SHARD).unlink(), "is missing"),
    "truncated shard": (lambda r: (r / SHARD).write_bytes((r / SHARD).read_bytes()[:-100]), "bytes, the manifest says"),
    "flipped byte": (lambda r: _flip_byte(r / SHARD), "has sha256"),
    "garbage of the same size": (lambda r: (r / SHARD).write_bytes(b"\0" * (r / SHARD).stat().st_size), "not a readable Arrow stream"),
    "shard swapped with another": (lambda r: shutil.copyfile(r / OTHER, r / SHARD), "has sha256|bytes, the manifest says"),
    "shard replaced by a folder": (lambda r: ((r / SHARD).unlink(), (r / SHARD).mkdir()), "is missing"),
    "unlisted shard": (lambda r: shutil.copyfile(r / SHARD, r / "data" / "train-00000-of-00005.arrow"), "is not in generation.json"),
    "run incomplete": (lambda r: _manifest(r, lambda m: m.update(status="incomplete")), "says the dataset is incomplete"),
    "no splits": (lambda r: _manifest(r, lambda m: m.update(splits={})), "says the dataset is empty"),
    "rows do not add up": (lambda r: _manifest(r, lambda m: m["splits"]["train"].update(num_rows=99)), "do not add up"),
    "shard rows edited": (lambda r: _manifest(r, lambda m: (_first_shard(m).update(num_rows=2), m["splits"]["train"].update(num_rows=m["splits"]["train"]["num_rows"] + 1))), "rows, the manifest says"),
    "shard outside the folder": (lambda r: (shutil.copyfile(r / SHARD, r.parent / "elsewhere.arrow"), _manifest(r, lambda m: _first_shard(m).update(file="../elsewhere.arrow"))), "points outside"),
    "shard as an absolute path": (lambda r: _manifest(r, lambda m: _first_shard(m).update(file=str((r / SHARD).resolve()))), "not a path relative"),
    "shard outside data/": (lambda r: (shutil.copyfile(r / SHARD, r / "x.arrow"), _manifest(r, lambda m: _first_shard(m).update(file="x.arrow"))), "is not in data/"),
    "shard through data/..": (lambda r: _manifest(r, lambda m: _first_shard(m).update(file="data/../" + SHARD)), "is not in data/"),
    "manifest not JSON": (lambda r: (r / "generation.json").write_text("{truncated"), "cannot be read"),
    "manifest missing": (lambda r: (r / "generation.json").unlink(), "holds no skinsynth manifest"),
    "card missing": (lambda r: (r / "README.md").unlink(), "dataset card `README.md` is missing"),
    "sample grid missing": (lambda r: (r / "sample_grid.png").unlink(), "sample grid `sample_grid.png` is missing"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damage_is_caught_by_verify_and_stops_push_before_any_request(kind, pushable, tmp_path, monkeypatch, capsys):
    damage, message = DAMAGE[kind]
    root = Path(shutil.copytree(pushable, tmp_path / "dataset"))
    damage(root)
    with pytest.raises(DatasetError, match=message):
        verify_dataset(root)
    capsys.readouterr()
    assert main(["-q", "verify", str(root)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(DatasetError, match=message):
        push_to_hub(root, "me/demo", progress=False)
    assert hub.calls == []


# ---------------------------------------------------------------- paths inside their root


@pytest.mark.parametrize("kind", ["shard outside the folder", "shard as an absolute path"])
def test_card_reads_no_shard_outside_the_dataset(kind, pushable, tmp_path, capsys):
    root = Path(shutil.copytree(pushable, tmp_path / "dataset"))
    DAMAGE[kind][0](root)
    before = (root / "README.md").read_bytes()
    assert main(["-q", "card", str(root)]) == 2
    assert DAMAGE[kind][1] in capsys.readouterr().err
    assert (root / "README.md").read_bytes() == before


def _table(root: Path, image: str, mapping_extra: str = "") -> tuple[Path, Path]:
    from .test_prepare import image_file

    (root / "src").mkdir()
    image_file(root / "src" / "a.jpg", "rgb")
    (root / "src" / "table.csv").write_text(f"file,dx\na.jpg,MEL\n{image},NEV\n")
    (root / "mapping.yaml").write_text(f"image: {{column: file}}\nlabel: {{column: dx}}\n{mapping_extra}")
    return root / "src", root / "mapping.yaml"


@pytest.mark.parametrize("image, mapping_extra, message", [
    ("/etc/hostname", "", "not a path relative"),
    ("../../outside.jpg", "", "points outside"),
    ("a.jpg", "images: ../..\n", "points outside"),
    ("a.jpg", "table: ../other.csv\n", "points outside"),
], ids=["absolute image", "image climbing out", "images folder climbing out", "table climbing out"])
def test_csv_and_mapping_paths_stay_inside_the_source(image, mapping_extra, message, tmp_path, capsys):
    from .test_prepare import image_file

    source, mapping = _table(tmp_path, image, mapping_extra)
    image_file(tmp_path / "outside.jpg", "rgb")
    (tmp_path / "other.csv").write_text("file,dx\n../outside.jpg,MEL\n")
    with pytest.raises(DatasetError, match=message):
        prepare(source, "csv", tmp_path / "out", mapping=mapping, progress=False)
    capsys.readouterr()
    assert main(["-q", "prepare", str(source), "--format", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_second_finetune_is_refused_while_one_holds_the_lock(tiny_pipeline_dir, finetune_inputs, tmp_path):
    from filelock import FileLock

    data, recipe, _ = finetune_inputs
    out = tmp_path / "out"
    state = tmp_path / "out.checkpoints"
    state.mkdir()
    with FileLock(str(state / "lock")):
        with pytest.raises(OutputError, match="another `skinsynth finetune` is writing"):
            finetune(str(tiny_pipeline_dir), data, recipe, out, method="lora", max_steps=2, **FAST)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["lock", "out.checkpoints"]  # nothing written
