"""The bad-input corpus: every command, given input it cannot use, exits 2 with one `error:` line, no traceback, and
leaves every file it was given, and the folders around them, exactly as they were (sha256 of the whole workspace
before and after: nothing changed, nothing added, no `.skinsynth/` skeleton left by a failed start).

Each case builds its input inside a fresh copy of a small workspace (a recipe, a prepared real dataset, a CSV table,
damaged manifests) and runs the CLI in-process. The tiny pipeline lives outside the workspace and is hashed too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from skinsynth.cli import main
from skinsynth.shards import sha256_file

from .conftest import DEMO_RECIPE

LONG = "x" * 5000


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file's sha256 and every folder under `roots`: what a refused command must leave as it was."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            state[str(path)] = sha256_file(path) if path.is_file() else "folder"
    return state


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The workspace every case starts from: demo recipe, a prepared real dataset (3 classes), a CSV table."""
    root = tmp_path_factory.mktemp("bad-input-base")
    shutil.copyfile(DEMO_RECIPE, root / "demo.yaml")
    images = root / "images"
    rng = np.random.default_rng(0)
    for name in ("melanoma", "nevus", "basal_cell_carcinoma"):
        (images / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / name / f"{i}.png")
    assert main(["-q", "prepare", str(images), "--format", "imagefolder", "--out", str(root / "real"), "--validation", "0.2", "--test", "0.2"]) == 0
    (root / "table").mkdir()
    shutil.copyfile(images / "nevus" / "0.png", root / "table" / "a.png")
    (root / "table" / "table.csv").write_text("file,dx\na.png,nevus\n", encoding="utf-8")
    return root


@pytest.fixture
def ws(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "ws"))


def recipe(ws: Path, change) -> str:
    """The demo recipe with `change(data)` applied, written into the workspace."""
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    change(data)
    path = ws / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def raw(ws: Path, name: str, content: bytes | str) -> str:
    path = ws / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def manifest(ws: Path, content) -> str:
    """A copy of the real dataset whose prepare.json is replaced by `content` (JSON of the wrong shape)."""
    folder = ws / "damaged"
    shutil.copytree(ws / "real", folder)
    (folder / "prepare.json").write_text(json.dumps(content))
    return str(folder)


def no_num_rows(ws: Path) -> dict:
    data = json.loads((ws / "real" / "prepare.json").read_text())
    del next(iter(data["splits"].values()))["num_rows"]
    return data


ALIAS_BOMB = "a: &a [" + ",".join(["x" * 100] * 10) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(6)
) + "name: *g\n"


def gen(ws, model, recipe_path=None, *more):
    return ["generate", recipe_path or str(ws / "demo.yaml"), "--model", str(model), "--out", str(ws / "out"), *more]


# (id, argv builder(ws, model) -> list[str], text the error line must contain)
CASES = [
    # generate: the recipe
    ("recipe-missing", lambda ws, m: gen(ws, m, str(ws / "nope.yaml")), "does not exist"),
    ("recipe-yaml-syntax", lambda ws, m: gen(ws, m, raw(ws, "r.yaml", "name: [unclosed\nclasses: {")), "r.yaml: not valid YAML"),
    ("recipe-alias-bomb", lambda ws, m: gen(ws, m, raw(ws, "r.yaml", ALIAS_BOMB)), "`name`"),
    ("recipe-too-many-aliases", lambda ws, m: gen(ws, m, raw(ws, "r.yaml", "a: &a x\nb: [" + ", ".join(["*a"] * 200) + "]\n")), "aliases"),
    ("recipe-not-mapping", lambda ws, m: gen(ws, m, raw(ws, "r.yaml", "- a\n- b\n")), "must be a mapping"),
    ("recipe-not-utf8", lambda ws, m: gen(ws, m, raw(ws, "r.yaml", b"name: caf\xe9\n")), "UTF-8"),
    ("recipe-unknown-key", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d.update(colour="red"))), "unknown key"),
    ("class-name-5000", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["classes"].append({"name": LONG}))), "at most"),
    ("class-prompt-5000", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["classes"][0].update(prompt=LONG))), "at most"),
    ("attribute-name-long", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["attributes"].update({LONG: ["a"]}))), "at most"),
    ("attribute-value-long", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["attributes"].update(site=[LONG]))), "at most"),
    ("recipe-name-long", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d.update(name=LONG))), "at most"),
    ("per-class-huge", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["splits"]["train"].update(per_class=10**12))), "at most"),
    ("total-huge", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["splits"].update(train={"total": 10**15}))), "at most"),
    ("per-class-zero", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d.update(splits={"train": {"per_class": 0}}))), "0 images"),
    ("unknown-placeholder", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["prompts"].update(templates=["{colour}"]))), "unknown placeholder"),
    ("unknown-scheduler", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["generation"].update(scheduler="fancy"))), "unknown scheduler"),
    ("negative-weight", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["classes"][0].update(weight=-1))), "weight"),
    ("height-not-multiple-8", lambda ws, m: gen(ws, m, recipe(ws, lambda d: d["generation"].update(height=65))), "height"),
    # generate: options and model
    ("device-bogus", lambda ws, m: gen(ws, m, None, "--device", "bogus"), "--device"),
    ("device-cuda-absent", lambda ws, m: gen(ws, m, None, "--device", "cuda:7"), "--device"),
    ("batch-size-zero", lambda ws, m: gen(ws, m, None, "--batch-size", "0"), "--batch-size"),
    ("batch-size-text", lambda ws, m: gen(ws, m, None, "--batch-size", "eight"), "--batch-size"),
    ("limit-negative", lambda ws, m: gen(ws, m, None, "--limit", "-1"), "--limit"),
    ("dtype-bogus", lambda ws, m: gen(ws, m, None, "--dtype", "float8"), "--dtype"),
    ("unknown-option", lambda ws, m: gen(ws, m, None, "--colour", "red"), "--colour"),
    ("model-missing-arg", lambda ws, m: ["generate", str(ws / "demo.yaml"), "--out", str(ws / "out")], "--model"),
    ("model-mistyped", lambda ws, m: gen(ws, ws / "tiny-sdd"), "does not exist"),
    ("model-not-pipeline", lambda ws, m: gen(ws, ws / "real"), "model_index.json"),
    ("out-is-prepared-dataset", lambda ws, m: ["generate", str(ws / "demo.yaml"), "--model", str(m), "--out", str(ws / "real")], "--out"),
    ("filter-option-alone", lambda ws, m: gen(ws, m, None, "--filter-threshold", "0.5"), "--filter-classifier"),
    ("generate-push-repo-id-bad", lambda ws, m: gen(ws, m, None, "--push-to-hub", "not a repo id!"), "repo"),
    # prepare
    ("prepare-source-missing", lambda ws, m: ["prepare", str(ws / "nope"), "--format", "imagefolder", "--out", str(ws / "p")], "nope"),
    ("prepare-format-bogus", lambda ws, m: ["prepare", str(ws / "images"), "--format", "zip", "--out", str(ws / "p")], "--format"),
    ("prepare-out-not-empty", lambda ws, m: ["prepare", str(ws / "images"), "--format", "imagefolder", "--out", str(ws / "table")], "table"),
    ("prepare-csv-not-utf8", lambda ws, m: ["prepare", raw(ws, "table/bad.csv", b"file,dx\na.png,n\xe9vus\n"), "--format", "csv", "--image-column", "file", "--label-column", "dx", "--out", str(ws / "p")], "line 2"),
    ("prepare-ham-metadata-not-utf8", lambda ws, m: ["prepare", str(ham_with_bad_metadata(ws)), "--format", "ham10000", "--out", str(ws / "p")], "line 2"),
    ("prepare-csv-column-missing", lambda ws, m: ["prepare", str(ws / "table" / "table.csv"), "--format", "csv", "--image-column", "path", "--label-column", "dx", "--out", str(ws / "p")], "path"),
    ("prepare-resize-bad", lambda ws, m: ["prepare", str(ws / "images"), "--format", "imagefolder", "--resize", "big", "--out", str(ws / "p")], "resize"),
    ("prepare-fraction-bad", lambda ws, m: ["prepare", str(ws / "images"), "--format", "imagefolder", "--validation", "1.5", "--out", str(ws / "p")], "validation"),
    ("prepare-attribute-bad", lambda ws, m: ["prepare", str(ws / "table" / "table.csv"), "--format", "csv", "--attribute", "site", "--out", str(ws / "p")], "--attribute"),
    # verify, card, push: manifests of the wrong shape
    ("verify-manifest-list", lambda ws, m: ["verify", manifest(ws, [])], "prepare.json"),
    ("verify-split-no-num-rows", lambda ws, m: ["verify", manifest(ws, no_num_rows(ws))], "num_rows"),
    ("verify-manifest-not-json", lambda ws, m: ["verify", raw_manifest(ws, "{not json")], "prepare.json"),
    ("verify-missing-folder", lambda ws, m: ["verify", str(ws / "nope")], "nope"),
    ("card-manifest-list", lambda ws, m: ["card", manifest(ws, [])], "prepare.json"),
    ("card-split-no-num-rows", lambda ws, m: ["card", manifest(ws, no_num_rows(ws))], "num_rows"),
    ("push-manifest-list", lambda ws, m: ["push", manifest(ws, []), "me/demo"], "prepare.json"),
    ("push-split-no-num-rows", lambda ws, m: ["push", manifest(ws, no_num_rows(ws)), "me/demo"], "num_rows"),
    ("push-manifest-string", lambda ws, m: ["push", manifest(ws, "hello"), "me/demo"], "prepare.json"),
    ("push-repo-id-bad", lambda ws, m: ["push", str(ws / "real"), "not a repo id!"], "repo"),
    # benchmark, finetune, recipe-from, filter, audit, tiny-pipeline
    ("benchmark-preset-bogus", lambda ws, m: ["benchmark", "--real", str(ws / "real"), "--preset", "nope", "--model", "m", "--out", str(ws / "b")], "--preset"),
    ("benchmark-real-missing", lambda ws, m: ["benchmark", "--real", str(ws / "nope"), "--preset", "akrout2023", "--model", "m", "--out", str(ws / "b")], "nope"),
    ("benchmark-arms-yaml-syntax", lambda ws, m: ["benchmark", "--real", str(ws / "real"), "--arms", raw(ws, "arms.yaml", "arms: [{name: x"), "--model", "m", "--out", str(ws / "b")], "arms.yaml"),
    ("finetune-method-bogus", lambda ws, m: ["finetune", "--base", str(m), "--data", str(ws / "real"), "--recipe", str(ws / "demo.yaml"), "--method", "dream", "--out", str(ws / "f")], "--method"),
    ("finetune-data-missing", lambda ws, m: ["finetune", "--base", str(m), "--data", str(ws / "nope"), "--recipe", str(ws / "demo.yaml"), "--method", "lora", "--out", str(ws / "f")], "nope"),
    ("finetune-recipe-yaml-syntax", lambda ws, m: ["finetune", "--base", str(m), "--data", str(ws / "real"), "--recipe", raw(ws, "r.yaml", "name: [x"), "--method", "lora", "--out", str(ws / "f")], "r.yaml"),
    ("recipe-from-missing", lambda ws, m: ["recipe-from", str(ws / "nope"), "--out", str(ws / "r2.yaml")], "nope"),
    ("filter-synthetic-missing", lambda ws, m: ["filter", str(ws / "nope"), "--classifier", str(ws), "--threshold", "0.5", "--out", str(ws / "flt")], "nope"),
    ("audit-train-missing", lambda ws, m: ["audit", "memorization", str(ws / "real"), "--train", str(ws / "nope"), "--out", str(ws / "a")], "nope"),
    ("tiny-pipeline-out-is-file", lambda ws, m: ["tiny-pipeline", str(ws / "demo.yaml")], "demo.yaml"),
]


def ham_with_bad_metadata(ws: Path) -> Path:
    folder = ws / "ham"
    (folder / "images").mkdir(parents=True)
    shutil.copyfile(ws / "table" / "a.png", folder / "images" / "ISIC_0000001.jpg")
    (folder / "HAM10000_metadata.csv").write_bytes(
        b"lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_0000001,nv,histo,50.0,male,b\xe4ck\n"
    )
    return folder


def raw_manifest(ws: Path, text: str) -> str:
    folder = ws / "damaged"
    shutil.copytree(ws / "real", folder)
    (folder / "prepare.json").write_text(text)
    return str(folder)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses an option itself
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("build, expected", [pytest.param(build, expected, id=name) for name, build, expected in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(build, expected, ws, tiny_pipeline_dir, capsys):
    argv = build(ws, tiny_pipeline_dir)
    before = snapshot(ws, tiny_pipeline_dir)
    code, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and len(err) < 1000, err[:2000]
    assert expected in lines[0], lines[0]
    assert snapshot(ws, tiny_pipeline_dir) == before


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({name for name, _, _ in CASES}) == len(CASES)


HEAVY = ("torch", "diffusers", "transformers", "datasets")


def test_help_and_refusals_load_no_heavy_library(ws):
    """`--help` and refused input answer before torch & co. load (seconds), whatever the machine's speed."""
    bad_recipe = recipe(ws, lambda d: d["classes"].append({"name": "bad name!"}))
    script = f"""
import sys
from skinsynth.cli import main
for argv in ({["--help"]!r}, {["generate", "--help"]!r}, {["benchmark", "--preset", "nope"]!r},
             {["generate", bad_recipe, "--model", "m", "--out", str(ws / "o")]!r}, {["-q", "verify", str(ws / "nope")]!r},
             {["-q", "prepare", str(ws / "nope"), "--format", "csv", "--out", str(ws / "p")]!r}):
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_custom_code_refusal_names_the_cli_option(ws, tiny_pipeline_dir, monkeypatch, capsys):
    """diffusers refuses a custom component naming its Python argument; the user typed a command."""
    import diffusers

    def refuse(*args, **kwargs):
        raise ValueError("The repository contains custom code in scheduler/my_scheduler.py which must be executed.\nPlease pass `trust_remote_code=True` to allow it.")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", refuse)
    before = snapshot(ws, tiny_pipeline_dir)
    code, err = run_cli(gen(ws, tiny_pipeline_dir), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--trust-remote-code" in err and "trust_remote_code=True" not in err
    assert snapshot(ws, tiny_pipeline_dir) == before
