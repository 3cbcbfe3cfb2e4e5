"""Dataset and model cards: Hub metadata that parses and matches the data, count tables that match the data, a sample
grid with one row per class, report sections, licenses inherited from training data, and byte-identical rebuilds."""

from __future__ import annotations

import glob
import io
import json
import random
import re
import shutil
import tomllib
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard
from PIL import Image

from skinsynth.card import templates_dir, write_dataset_card, write_model_card
from skinsynth.card.dataset import size_category
from skinsynth.card.summary import DataSummary, _natural, shared_groups
from skinsynth.card.templates import AKROUT_2023
from skinsynth.cli import main
from skinsynth.errors import DatasetError, PipelineError
from skinsynth.generate import generate
from skinsynth.pipeline import MODEL_METADATA_FILE
from skinsynth.shards import atomic_write_json, splits_manifest, write_split

from .conftest import DEMO_RECIPE, REPO


@pytest.fixture(scope="module")
def synthetic(tiny_pipeline_dir, tmp_path_factory) -> Path:
    """The demo recipe's first 6 images per split, generated with the tiny pipeline (generate writes the card)."""
    out = tmp_path_factory.mktemp("card") / "demo"
    generate(DEMO_RECIPE, str(tiny_pipeline_dir), out, limit=6, batch_size=6, progress=False)
    return out


@pytest.fixture
def synthetic_copy(synthetic, tmp_path) -> Path:
    return Path(shutil.copytree(synthetic, tmp_path / "demo"))


def load_card(root: Path) -> DatasetCard:
    card = DatasetCard.load(root / "README.md")
    assert isinstance(card.data, DatasetCardData)
    return card


def card_tables(text: str) -> dict[str, dict[str, list[int]]]:
    """The count tables of a card body: title -> row name -> counts (per split, then total)."""
    tables = {}
    for match in re.finditer(r"^\*\*(Images per [^*]+)\*\*\n\n((?:\|.*\n)+)", text, flags=re.M):
        rows = [line.strip("|").split(" | ") for line in match.group(2).strip().splitlines()[2:]]
        tables[match.group(1)] = {cells[0].strip(" *"): [int(c.strip(" *|")) for c in cells[1:]] for cells in rows}
    return tables


def test_generate_writes_a_card_whose_metadata_parses(synthetic):
    card = load_card(synthetic)
    data = card.data
    assert data.license == "cc-by-nc-sa-4.0"
    assert data.task_categories == ["image-classification"]
    assert data.task_ids == ["multi-class-image-classification"]
    assert {"synthetic", "medical", "dermatology", "skinsynth"} <= set(data.tags)
    assert data.annotations_creators == ["machine-generated"]
    assert data.size_categories == ["n<1K"]
    assert data.pretty_name == "skinsynth-demo"
    assert data.source_datasets is None  # the tiny pipeline was not fine-tuned on anything
    assert (synthetic / "sample_grid.png").is_file()
    assert "](sample_grid.png)" in card.text


def test_configs_patterns_resolve_to_the_shards(synthetic):
    manifest = json.loads((synthetic / "generation.json").read_text())
    (config,) = load_card(synthetic).data.configs
    assert config["config_name"] == "default"
    assert [entry["split"] for entry in config["data_files"]] == list(manifest["splits"])
    for entry in config["data_files"]:
        found = sorted(Path(p).relative_to(synthetic).as_posix() for p in glob.glob(str(synthetic / entry["path"])))
        assert found == [shard["file"] for shard in manifest["splits"][entry["split"]]["shards"]]


def test_load_dataset_reads_what_the_card_declares(synthetic):
    info = load_card(synthetic).data.dataset_info
    dataset = datasets.load_dataset(str(synthetic))
    assert list(dataset) == [split["name"] for split in info["splits"]]
    declared = datasets.Features._from_yaml_list(info["features"])
    for split in info["splits"]:
        assert dataset[split["name"]].features == declared
        assert dataset[split["name"]].num_rows == split["num_examples"]
    assert declared["label"].names == ["melanoma", "nevus", "basal_cell_carcinoma"]


def test_count_tables_match_the_data(synthetic):
    dataset = datasets.load_dataset(str(synthetic))
    tables = card_tables(load_card(synthetic).text)
    assert set(tables) == {"Images per class", "Images per fitzpatrick", "Images per body_site"}
    names = dataset["train"].features["label"].names
    for split_index, split in enumerate(dataset):
        labels = list(dataset[split]["label"])
        for label, name in enumerate(names):
            assert tables["Images per class"][name][split_index] == labels.count(label)
        for attribute in ("fitzpatrick", "body_site"):
            values = list(dataset[split][attribute])
            for value, counts in tables[f"Images per {attribute}"].items():
                if value != "total":
                    assert counts[split_index] == values.count(value), (attribute, value, split)
            assert tables[f"Images per {attribute}"]["total"][split_index] == len(values)
    assert tables["Images per class"]["total"][-1] == sum(dataset.num_rows.values())


def test_card_lists_generation_details(synthetic):
    manifest = json.loads((synthetic / "generation.json").read_text())
    text = load_card(synthetic).text
    for expected in [manifest["identity"]["recipe_sha256"], manifest["model"]["fingerprint"], "DDIMScheduler", "64×64 px",
                     "| denoising steps | 4 |", "2.0, 4.0", "base seed 1234", "`text, watermark, drawing`",
                     "a clinical photograph of {class} on the {body_site}, Fitzpatrick skin type {fitzpatrick}",
                     f"diffusers {manifest['library_versions']['diffusers']}", "--limit 6", "Not for diagnosis",
                     "No copy check was needed: the generating model", "Label noise", AKROUT_2023, "@software{skinsynth"]:
        assert expected in text, expected
    assert 'load_dataset("path/to/demo")' in text


def test_rebuilding_gives_the_same_bytes(synthetic_copy):
    card, grid = (synthetic_copy / "README.md").read_bytes(), (synthetic_copy / "sample_grid.png").read_bytes()
    (synthetic_copy / "README.md").unlink()
    (synthetic_copy / "sample_grid.png").unlink()
    assert main(["card", str(synthetic_copy)]) == 0
    assert (synthetic_copy / "README.md").read_bytes() == card
    assert (synthetic_copy / "sample_grid.png").read_bytes() == grid
    write_dataset_card(synthetic_copy, repo_id="me/demo")
    assert 'load_dataset("me/demo")' in (synthetic_copy / "README.md").read_text()


def test_sample_grid_has_one_labeled_row_per_class(synthetic):
    grid = Image.open(synthetic / "sample_grid.png")
    assert grid.format == "PNG"
    pixels = grid.convert("L")
    top, tile, pad = 28, 128, 6  # the layout `sample_grid` draws
    assert grid.height == top + 3 * (tile + pad) + pad
    first_image_x = next(x for x in range(grid.width) if pixels.getpixel((x, top + tile // 2)) != 255 and x > 100)
    for row in range(3):
        y = top + row * (tile + pad)
        label = pixels.crop((0, y, first_image_x - 1, y + tile))
        image = pixels.crop((first_image_x, y, first_image_x + tile, y + tile))
        assert label.getextrema()[0] < 128, f"row {row} has no label text"
        assert image.getextrema() != (255, 255), f"row {row} has no image"


def test_reports_become_sections(synthetic_copy):
    reports = synthetic_copy / "reports"
    reports.mkdir()
    atomic_write_json(reports / "benchmark.json", {
        "model": "convnext-tiny", "real": "ham10000-prepared", "synthetic": ["me/demo"], "image_size": 64, "epochs": 2, "seeds": [0, 1, 2],
        "command": "skinsynth benchmark ...",
        "arms": [{"name": "real", "real_per_class": 10, "synthetic_per_class": 0,
                  "metrics": {"top1": {"mean": 0.5, "std": 0.01, "ci95": [0.48, 0.52]}, "balanced_accuracy": {"mean": 0.4, "std": 0.02, "ci95": [0.37, 0.43]}}},
                 {"name": "real+synthetic", "real_per_class": 10, "synthetic_per_class": 20,
                  "metrics": {"top1": {"mean": 0.625, "std": 0.015, "ci95": [0.6, 0.65]}, "balanced_accuracy": {"mean": 0.45, "std": 0.01, "ci95": [0.43, 0.47]}}}],
    })
    from skinsynth.audit.matching import share
    from skinsynth.audit.memorization import DEFINITIONS, excess, verdict

    memorization = {
        "features": "dinov2-small", "threshold": 0.95, "threshold_method": "split-conformal 0.99 quantile", "num_synthetic": 12,
        "num_train": 100, "num_flagged": 1, "rate": 1 / 12, "per_class": {"melanoma": 0.25, "nevus": 0.0, "basal_cell_carcinoma": None}, "flagged": [],
        "false_positive_rate": share(1, 50), "excess": excess(1, 12, 1, 50), "planted_copy_recall": {"heavy": share(45, 50)},
        "definitions": DEFINITIONS, "rows": {"reference": "100 train rows", "calibration": "50 test rows", "measurement": "50 other test rows", "encoder": "pretrained"},
    }
    atomic_write_json(reports / "memorization.json", memorization | {"verdict": verdict(memorization)})
    atomic_write_json(reports / "quality.json", {
        "features": "inception", "overall": {"fid": 123.4, "kid": 0.05}, "real_vs_real": {"fid": 20.1, "kid": 0.001},
        "per_class": {"melanoma": {"fid": 150.0, "kid": 0.06}},
    })
    text = DatasetCard.load(write_dataset_card(synthetic_copy)).text
    assert "## Benchmark" in text and "| real+synthetic | 10 | 20 | 0.625 ± 0.015 [0.600, 0.650] | 0.450 ± 0.010 [0.430, 0.470] |" in text
    assert "## Memorization" in text and "**1 of 12 synthetic images are above the threshold, as many as expected from new patients" in text
    assert "| flagged synthetic images | 1 of 12 (8.33%) |" in text and "| melanoma | 25.00% |" in text and "| basal_cell_carcinoma | — |" in text
    assert "| false-positive rate (measured) | 2.00% (95% CI 0.35–10.50%, 1/50) |" in text and "| planted-copy recall (heavy) | 90.0% (95% CI" in text
    assert "a perfect generator" in text and "0, not significant" in text
    assert "Memorization was checked: 1 of 12 images (8.33%)" in text
    assert "## Image quality" in text and "| synthetic vs real | 123.4 | 0.05 |" in text and "| real vs real (a perfect generator) | 20.1 | 0.001 |" in text
    assert text.index("## Benchmark") < text.index("## Memorization") < text.index("## Image quality") < text.index("## Intended use")

    (reports / "quality.json").write_text("{not json")
    with pytest.raises(DatasetError, match="quality.json"):
        write_dataset_card(synthetic_copy)


def test_model_fine_tuned_on_ham10000_passes_on_its_license(synthetic_copy):
    manifest_path = synthetic_copy / "generation.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["finetune"] = {"base_model": "runwayml/stable-diffusion-v1-5", "base_revision": "main", "method": "full",
                                     "training_data": "/data/ham10000-prepared", "training_license": "cc-by-nc-sa-4.0", "steps": 1000}
    manifest["recipe"]["license"] = "cc-by-4.0"
    atomic_write_json(manifest_path, manifest)
    card = load_card(Path(write_dataset_card(synthetic_copy)).parent)
    assert card.data.source_datasets == ["HAM10000"]
    assert card.data.license == "cc-by-4.0"
    assert "Training data of the fine-tuned pipeline (HAM10000):** `cc-by-nc-sa-4.0`" in card.text
    assert "The recipe declares `cc-by-4.0`, but the model was fine-tuned on data under `cc-by-nc-sa-4.0`" in card.text
    assert "Tschandl, Philipp" in card.text  # the training data's citation, known for HAM10000


def make_real_dataset(root: Path) -> Path:
    """A tiny dataset in the layout `skinsynth prepare` writes, with a prepare.json following its schema."""
    names = ["akiec", "bcc", "mel", "nv"]
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=names), "body_site": datasets.Value("string"),
        "sex": datasets.Value("string"), "age": datasets.Value("string"), "fitzpatrick": datasets.Value("string"),
        "group_id": datasets.Value("string"), "dx": datasets.Value("string"), "dx_type": datasets.Value("string"), "image_id": datasets.Value("string"),
    })
    rng = random.Random(0)
    infos = {}
    for split, count in [("train", 10), ("validation", 4), ("test", 5)]:
        rows = []
        for i in range(count):
            buffer = io.BytesIO()
            Image.new("RGB", (40, 30), tuple(rng.randrange(256) for _ in range(3))).save(buffer, format="JPEG")
            label = i % len(names) if split != "test" else 3
            rows.append({"image": {"bytes": buffer.getvalue(), "path": f"ISIC_{split}{i}.jpg"}, "label": label, "body_site": ["back", "face", None][i % 3],
                         "sex": ["male", "female"][i % 2], "age": str(30 + 5 * (i % 4)), "fitzpatrick": None, "group_id": f"HAM_{split}{i // 2}",
                         "dx": names[label], "dx_type": "histo", "image_id": f"ISIC_{split}{i}"})
        infos[split] = write_split(root, split, rows, features, shard_size=4)
    atomic_write_json(root / "prepare.json", {
        "kind": "real", "source": {"name": "HAM10000", "format": "ham10000", "path": "/data/HAM10000"}, "license": "cc-by-nc-sa-4.0",
        "citation": "@article{tschandl2018ham10000, title={The HAM10000 dataset}}", "splits": splits_manifest(infos),
        "skipped": {"missing_image": 2}, "features": features.to_dict(),
    })
    return root


def test_real_dataset_card(tmp_path):
    root = make_real_dataset(tmp_path / "ham")
    card = load_card(write_dataset_card(root).parent)
    data = card.data
    assert data.license == "cc-by-nc-sa-4.0"
    assert "synthetic" not in data.tags and "dermatology" in data.tags
    assert data.annotations_creators == ["found"]
    assert data.source_datasets == ["HAM10000"]
    assert data.pretty_name == "HAM10000 (skinsynth layout)"
    dataset = datasets.load_dataset(str(root))
    assert list(dataset) == ["train", "validation", "test"]
    assert dataset["test"].features == datasets.Features._from_yaml_list(data.dataset_info["features"])
    tables = card_tables(card.text)
    assert set(tables) == {"Images per class", "Images per fitzpatrick", "Images per body_site", "Images per sex", "Images per age"}
    assert tables["Images per class"]["nv"] == [2, 1, 5, 8]
    assert tables["Images per fitzpatrick"] == {"unknown": [10, 4, 5, 19], "total": [10, 4, 5, 19]}
    assert tables["Images per body_site"]["unknown"] == [3, 1, 1, 5]
    assert list(tables["Images per age"]) == ["30-39", "40-49", "total"]  # ages in decades
    for expected in ["@article{tschandl2018ham10000", "missing_image 2", "No `group_id` (lesion or patient) has images in two splits", "real patient images",
                     "Not for diagnosis", "`dx_type`"]:
        assert expected in card.text, expected
    assert Image.open(root / "sample_grid.png").height == 28 + 4 * (128 + 6) + 6
    first = (root / "README.md").read_bytes()
    write_dataset_card(root)
    assert (root / "README.md").read_bytes() == first


def test_shared_groups_and_natural_order():
    summary = DataSummary(features=None, columns={"train": {"group_id": ["a", "a", "b", None]}, "test": {"group_id": ["b", "c", None]}})
    assert shared_groups(summary) == 1
    assert sorted(["5", "45", "100", "abc", "7.5"], key=_natural) == ["5", "7.5", "45", "100", "abc"]


def test_card_refuses_an_unfinished_run(synthetic_copy):
    manifest = json.loads((synthetic_copy / "generation.json").read_text())
    manifest["status"] = "incomplete"
    atomic_write_json(synthetic_copy / "generation.json", manifest)
    with pytest.raises(DatasetError, match="unfinished"):
        write_dataset_card(synthetic_copy)
    with pytest.raises(DatasetError, match="no skinsynth manifest"):
        write_dataset_card(synthetic_copy / "data")


@pytest.mark.parametrize("method, snippet", [("lora", "pipe.load_lora_weights"), ("textual-inversion", "pipe.load_textual_inversion"), ("full", 'DiffusionPipeline.from_pretrained("me/derm-sd")')])
def test_model_card(tmp_path, method, snippet):
    folder = tmp_path / "derm-sd"
    folder.mkdir()
    atomic_write_json(folder / MODEL_METADATA_FILE, {
        "base_model": "runwayml/stable-diffusion-v1-5", "base_revision": "main", "method": method, "training_data": "/data/ham10000-prepared",
        "training_license": "cc-by-nc-sa-4.0", "training_citation": None, "steps": 500, "hyperparameters": {"learning_rate": 1e-4, "rank": 4},
        "final_loss": 0.1234, "tokens": ["<mel>"] if method == "textual-inversion" else None,
    })
    card = ModelCard.load(write_model_card(folder, repo_id="me/derm-sd"))
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert card.data.base_model == "runwayml/stable-diffusion-v1-5"
    assert card.data.pipeline_tag == "text-to-image" and card.data.library_name == "diffusers"
    assert "skinsynth" in card.data.tags
    assert snippet in card.text
    assert "| final loss | 0.1234 |" in card.text and "| learning_rate | 0.0001 |" in card.text
    assert "inherited from its training data, HAM10000" in card.text and "Tschandl" in card.text
    with pytest.raises(PipelineError, match=MODEL_METADATA_FILE):
        write_model_card(tmp_path)


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 2_500_000, 10**13)] == ["n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M", "n>1T"]


def test_templates_ship_in_the_wheel():
    """Every package under skinsynth/ is listed in pyproject (packages are listed, not found, to map `cards/` in)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "skinsynth").rglob("__init__.py")}
    assert on_disk | {"skinsynth.cards"} == set(config["packages"])
    assert config["package-dir"]["skinsynth.cards"] == "cards"
    assert templates_dir() == REPO / "cards"
    templates = {p.name for p in templates_dir().glob("*.md")}
    assert {"synthetic_dataset.md", "real_dataset.md", "model.md", "benchmark_section.md", "memorization_section.md", "quality_section.md"} <= templates
    assert all(glob.fnmatch.fnmatch(name, pattern) for name in templates for pattern in config["package-data"]["skinsynth.cards"])
