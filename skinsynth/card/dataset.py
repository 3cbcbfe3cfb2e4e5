"""Dataset cards, synthetic and real: the YAML metadata the Hub and `load_dataset` read (built with
`DatasetCardData` plus the `dataset_info` and `configs` blocks `datasets` writes on `push_to_hub`) and the text people
read, rebuilt from the manifest, the data and the reports; and `add_report`, which the `--update-card` options use."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ..errors import DatasetError, SkinsynthError
from ..paths import inside as inside_root
from ..paths import moved_reference
from ..shards import DATA_DIR, atomic_write_json, atomic_write_text, read_manifest
from .grid import write_sample_grid
from .provenance import finetuned_parts, known_dataset, training_data, unique
from .reports import REPORTS, REPORTS_DIR, read_reports, report_sections
from .summary import DataSummary, count_tables, missing_values, open_stream, read_summary, shared_groups
from .templates import AKROUT_2023, CARD_FILE, skinsynth_citation, templates_dir, version

logger = logging.getLogger(__name__)

REAL_ATTRIBUTES = ("fitzpatrick", "body_site", "sex", "age")  # `prepare`'s attribute columns, where a source has them
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` value for a row count."""
    return next((name for bound, name in SIZE_CATEGORIES if num_rows < bound), "n>1T")


def _card_data(*, license: str, tags: list[str], annotations_creators: list[str], num_rows: int, source_datasets: list[str],
               pretty_name: str, summary: DataSummary, manifest: dict):
    """`DatasetCardData` with `dataset_info` (features, split sizes) and `configs` (each split's shards), written the
    way `datasets` writes them on `push_to_hub`, so `load_dataset` and the Hub viewer read the same splits."""
    import datasets
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(
        license=license,
        task_categories=["image-classification"],
        task_ids=["multi-class-image-classification"],
        tags=tags,
        annotations_creators=annotations_creators,
        size_categories=[size_category(num_rows)],
        source_datasets=source_datasets or None,
        pretty_name=pretty_name,
    )
    splits = datasets.SplitDict()
    for split, rows in summary.split_rows.items():
        splits.add(datasets.SplitInfo(name=split, num_bytes=manifest["splits"][split]["num_bytes"], num_examples=rows))
    size = sum(info["num_bytes"] for info in manifest["splits"].values())
    DatasetInfosDict({"default": DatasetInfo(features=summary.features, splits=splits, download_size=size, dataset_size=size)}).to_dataset_card_data(card_data)
    data_files = [{"split": split, "path": f"{DATA_DIR}/{split}-*"} for split in manifest["splits"]]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(card_data)
    return card_data


def _common_variables(root: Path, summary: DataSummary, attributes: list[str], attribute_values: dict, repo_id: str | None, reports: dict, grid: dict) -> dict:
    """Template variables both dataset cards use."""
    return {
        "repo_id": repo_id,
        "load_id": repo_id or f"path/to/{root.name}",
        "folder_name": root.name,
        "num_rows": sum(summary.split_rows.values()),
        "split_rows": summary.split_rows,
        "label_names": summary.label_names,
        "attribute_names": attributes,
        "count_tables": count_tables(summary, attributes, attribute_values),
        "grid": grid,
        "report_sections": report_sections(reports, summary.label_names),
        "memorization": reports.get("memorization"),
    }


def _synthetic_card(root: Path, manifest: dict, repo_id: str | None):
    from huggingface_hub import DatasetCard

    from ..privacy import privacy_section
    from ..recipe import parse_recipe

    recipe = parse_recipe(manifest["recipe"], source=f"{root / 'generation.json'}: recipe")
    attributes = list(recipe.attributes)
    summary = read_summary(root, manifest, attributes)
    model = manifest["model"]
    finetunes = finetuned_parts(model)
    tuned = [(part, data) for part in finetunes if (data := training_data(part))]
    trained_on = [data for _, data in tuned]
    reports = read_reports(root)
    attribute_values = {name: list(spec.values) for name, spec in recipe.attributes.items()}


    card_data = _card_data(
        license=recipe.license,
        tags=["synthetic", "medical", "dermatology", "skin-lesions", "diffusion", "skinsynth"],
        annotations_creators=["machine-generated"],
        num_rows=sum(summary.split_rows.values()),
        source_datasets=unique(t.source_dataset for t in trained_on),
        pretty_name=recipe.name,
        summary=summary,
        manifest=manifest,
    )
    other_licenses = unique(t.license for t in trained_on if t.license and t.license != recipe.license)
    if other_licenses:
        logger.warning("the recipe declares license %s, but the model was fine-tuned on data under %s: check that the dataset may use it", recipe.license, ", ".join(other_licenses))
    grid = write_sample_grid(root, manifest, summary)
    variables = _common_variables(root, summary, attributes, attribute_values, repo_id, reports, grid)
    versions = manifest.get("library_versions", {})
    variables.update(
        description=recipe.description,
        limit=manifest.get("identity", {}).get("limit"),
        recipe=recipe,
        classes=recipe.classes,
        generation=recipe.generation,
        guidance_scales=list(recipe.generation.guidance_scales),
        attribute_sampling=", ".join(f"{split}: {spec.attributes}" for split, spec in recipe.splits.items()),
        model=model,
        finetunes=finetunes,
        recipe_sha256=manifest.get("identity", {}).get("recipe_sha256", recipe.fingerprint()),
        library_versions=versions,
        rejections=manifest.get("rejections"),
        filter=manifest.get("filter"),
        missing_attribute_values=missing_values(summary, attribute_values),
        joint_fit=_joint_fit(recipe, summary),
        training_data_names=unique(t.name for t in trained_on),
        privacy_section=privacy_section(root, manifest, reports, unique(t.name for t in trained_on)),
        tuned=[{"part": part["part"], "data": data} for part, data in tuned],
        other_licenses=other_licenses,
        citations={"akrout": AKROUT_2023, "training": unique(t.citation for t in trained_on), "skinsynth": skinsynth_citation(versions.get("skinsynth", version()))},
    )
    return DatasetCard.from_template(card_data, template_path=str(templates_dir() / "synthetic_dataset.md"), **variables)


def _joint_fit(recipe, summary: DataSummary) -> dict[str, dict]:
    """`plan.joint_fit` of the generated train split (the first split when there is no `train`)."""
    from ..plan import joint_fit

    split = "train" if "train" in summary.columns else next(iter(summary.columns), None)
    if split is None or split not in recipe.splits or recipe.splits[split].attributes != "weighted":
        return {}
    columns = summary.columns[split]
    names = summary.label_names
    rows = {"label": [names[k] for k in columns["label"]], **{name: columns[name] for name in recipe.attributes if name in columns}}
    return joint_fit(recipe, split, rows) if all(name in rows for name in recipe.attributes) else {}


def _real_card(root: Path, manifest: dict, repo_id: str | None):
    from huggingface_hub import DatasetCard

    first_shard = next(shard for info in manifest["splits"].values() for shard in info["shards"])
    first_path = inside_root(root, first_shard["file"], "the manifest's shard list")
    names = open_stream(first_path).schema.names if first_path.is_file() else []
    attributes = list(manifest.get("attributes") or [name for name in REAL_ATTRIBUTES if name in names])
    has_groups = "group_id" in names
    summary = read_summary(root, manifest, attributes + (["group_id"] if has_groups else []))
    source = manifest.get("source") or {}
    source_name = source.get("name") or source.get("format") or root.name
    known = known_dataset(source_name)
    reports = read_reports(root)
    citation = manifest.get("citation") or (known.citation if known else None)
    card_data = _card_data(
        license=manifest.get("license") or (known.license if known else "other"),
        tags=["medical", "dermatology", "skin-lesions", "skinsynth"],
        annotations_creators=manifest.get("annotations_creators") or ["found"],
        num_rows=sum(summary.split_rows.values()),
        source_datasets=[source.get("repo_id") or (known.name if known else source_name)],
        pretty_name=manifest.get("pretty_name") or f"{source_name} (skinsynth layout)",
        summary=summary,
        manifest=manifest,
    )
    grid = write_sample_grid(root, manifest, summary)
    variables = _common_variables(root, summary, attributes, {}, repo_id, reports, grid)
    variables.update(
        source_name=source_name,
        source={key: value for key, value in source.items() if key != "path"},  # a local path is nobody else's business
        extra_columns=[name for name in summary.features if name not in ("image", "label", *attributes)],
        skipped=manifest.get("skipped") or {},
        duplicates=manifest.get("duplicates"),
        has_groups=has_groups,
        shared_groups=shared_groups(summary) if has_groups else None,
        citations={"source": citation, "akrout": AKROUT_2023, "skinsynth": skinsynth_citation(manifest.get("library_versions", {}).get("skinsynth", version()))},
    )
    return DatasetCard.from_template(card_data, template_path=str(templates_dir() / "real_dataset.md"), **variables)


def build_dataset_card(root: str | Path, repo_id: str | None = None):
    """The `DatasetCard` of a skinsynth dataset folder (synthetic or real); also (re)writes `sample_grid.png`."""
    root = Path(root)
    manifest_name, manifest = read_manifest(root)
    if manifest.get("status", "complete") != "complete" or not manifest.get("splits"):
        raise DatasetError(f"{root / manifest_name} describes an unfinished dataset: run the same command again to finish it, then build the card")
    if manifest_name == "generation.json":
        return _synthetic_card(root, manifest, repo_id)
    return _real_card(root, manifest, repo_id)


def write_dataset_card(root: str | Path, repo_id: str | None = None) -> Path:
    """Rebuild `root/README.md` (and `sample_grid.png`) from the manifest, the data and `reports/`; returns the card's
    path. `repo_id` goes into the card's `load_dataset` snippet. Mirrors `skinsynth card`."""
    root = Path(root)
    card = build_dataset_card(root, repo_id)
    path = root / CARD_FILE
    atomic_write_text(path, str(card))
    return path


def report_folder(dataset: str | Path) -> Path:
    """The local dataset folder that `--update-card` writes into (a Hub id cannot be updated in place). Commands
    call it before their work too, so that a long run does not fail at its last step."""
    root = Path(dataset).expanduser()
    if not root.is_dir():
        raise SkinsynthError(f"`--update-card` writes into the dataset folder, but `{dataset}` is not a local folder; download it first or drop --update-card")
    return root


def add_report(dataset: str | Path, name: str, report: dict, *, written_in: str | Path | None = None, path_fields: Sequence[str] = ()) -> Path:
    """Save `report` as DATASET/reports/NAME.json and rebuild the card with it: what the `--update-card` options of
    `benchmark` and the audits do. Returns the report's path.

    `path_fields` (dotted keys, `*` for every value of a mapping; a list's items each) name the local paths the report gives relative to `written_in`,
    the folder of its own copy: this copy names them relative to DATASET/reports, so they resolve from there too."""
    if name not in REPORTS:
        raise ValueError(f"unknown report {name!r}; cards know {REPORTS}")
    root = report_folder(dataset)
    path = root / REPORTS_DIR / f"{name}.json"
    if written_in is not None:
        report = _rebased(report, path_fields, Path(written_in), path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)
    write_dataset_card(root)
    return path


def _rebased(report: dict, path_fields: Sequence[str], written_in: Path, moved_to: Path) -> dict:
    report, move = copy.deepcopy(report), partial(moved_reference, written_in=written_in, moved_to=moved_to)
    for field in path_fields:
        *parents, key = field.split(".")
        holders = [report]
        for part in parents:
            holders = [child for h in holders if isinstance(h, dict) for child in (h.values() if part == "*" else [h.get(part)])]
        for holder in holders:
            if isinstance(holder, dict) and key in holder:
                value = holder[key]
                holder[key] = [move(v) for v in value] if isinstance(value, list) else move(value)
    return report
