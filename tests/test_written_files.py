"""No command writes a local absolute path or a pickle into what it leaves for others (issue 21, item 8).

Every input lives under pytest's temporary root; every file each command writes (text, JSON, YAML cards, the
metadata of safetensors, Arrow and PNG files) is searched for that root, and the files an upload of each output
would send are checked for pickles. Tiny models and datasets: the whole module takes well under a minute."""

from __future__ import annotations

import json

import pytest

from skinsynth.finetune import finetune
from skinsynth.generate import generate
from skinsynth.prepare import prepare

from .test_benchmark import build_real, build_synthetic
from .test_finetune import FAST, RECIPE, write_real_dataset
from .test_scratch import TOY_ARCHITECTURE, TOY_RECIPE, write_toy_dataset
from .written_files import is_pickle, local_paths_in, uploaded_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> list[str]:
    """The temporary root every input and output lives under, as written and as resolved."""
    import os

    base = tmp_path_factory.getbasetemp()
    return list(dict.fromkeys([str(base), os.path.realpath(base)]))


@pytest.fixture(scope="module")
def outputs(tiny_pipeline_dir, ham10000_dir, ham_subset, tmp_path_factory) -> dict:
    """{command: output folder} for one small run of each command, inputs given as absolute paths."""
    from transformers import ResNetConfig

    from skinsynth.audit.memorization import audit_memorization
    from skinsynth.benchmark import benchmark
    from skinsynth.recipe import parse_recipe

    root = tmp_path_factory.mktemp("written")
    written = {"prepare": root / "prepared"}
    prepare(ham_subset, "ham10000", written["prepare"], progress=False, shard_size=50)

    real = write_real_dataset(root / "real", ham10000_dir, per_class=4)
    recipe = parse_recipe(RECIPE)
    for method in ("lora", "full"):
        written[f"finetune-{method}"] = root / method
        finetune(str(tiny_pipeline_dir), real, recipe, written[f"finetune-{method}"], method=method, max_steps=1, **FAST)
    toy = write_toy_dataset(root / "toy", per_class=2)
    architecture = root / "architecture.json"
    architecture.write_text(json.dumps({**TOY_ARCHITECTURE, "autoencoder_steps": 1}))
    written["finetune-scratch"] = root / "scratch"
    finetune(None, toy, parse_recipe(TOY_RECIPE), written["finetune-scratch"], method="scratch", size="tiny", config=architecture,
             max_steps=2, batch_size=2, validation_images=1, progress=False)

    written["generate-lora"] = root / "synthetic-lora"
    generate(recipe, str(tiny_pipeline_dir), written["generate-lora"], lora=str(written["finetune-lora"]), batch_size=2, limit=2, device="cpu", progress=False)
    written["generate-full"] = root / "synthetic-full"
    generate(recipe, str(written["finetune-full"]), written["generate-full"], batch_size=2, limit=2, device="cpu", progress=False)

    classifier = root / "resnet-tiny"
    ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic").save_pretrained(classifier)
    arms = root / "arms.yaml"
    arms.write_text("arms:\n  - {name: real, real_per_class: 2}\n  - {name: hybrid, real_per_class: 2, synthetic_per_class: 2}\n")
    written["benchmark"] = root / "benchmark"
    bench_real, bench_synthetic = build_real(ham10000_dir, root / "bench-real"), build_synthetic(root / "bench-synthetic", per_class=2)
    benchmark(str(bench_real), [str(bench_synthetic)], model=str(classifier),
              out=written["benchmark"], arms=arms, image_size=32, epochs=1, batch_size=8, seeds=1, workers=0, save_models="best", progress=False)

    written["audit-memorization"] = root / "audit-memorization"
    audit_memorization(str(bench_synthetic), str(bench_real), written["audit-memorization"], num_planted=8, progress=False)
    written["audit-memorization-card"] = root / "audit-memorization-card"
    audit_memorization(str(written["generate-full"]), str(bench_real), written["audit-memorization-card"], num_planted=8, progress=False, update_card=True)
    return written


def test_no_output_names_a_local_path(outputs, roots):
    found = {command: local_paths_in(folder, roots) for command, folder in outputs.items()}
    assert not {command: files for command, files in found.items() if files}


def test_no_upload_of_an_output_carries_a_pickle(outputs):
    for command, folder in outputs.items():
        files = uploaded_files(folder)
        assert files, command
        assert not [name for name in files if is_pickle(folder / name)], command


def test_reports_copied_into_a_card_name_their_inputs_from_the_card(outputs):
    """`--update-card` copies a report written in the command's --out into DATASET/reports: its local paths must
    resolve from there, not from --out."""
    reports = outputs["generate-full"] / "reports"
    report = json.loads((reports / "memorization.json").read_text(encoding="utf-8"))
    assert (reports / report["synthetic"]).resolve() == outputs["generate-full"].resolve()
    assert (reports / report["real"]).resolve().name == "bench-real"
    written = json.loads((outputs["audit-memorization-card"] / "memorization.json").read_text(encoding="utf-8"))
    assert (outputs["audit-memorization-card"] / written["real"]).resolve().name == "bench-real"  # the audit's own copy
