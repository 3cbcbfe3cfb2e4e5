"""Dataset and model cards: what the Hub reads (YAML metadata) and what people read (how it was made, what it may be
used for, what it may not), rebuilt from the manifest, the data and the reports beside it.

The templates live in `cards/` (Jinja, rendered by huggingface_hub's `DatasetCard.from_template` and
`ModelCard.from_template`); the metadata is built with `DatasetCardData` plus the `dataset_info` and `configs`
blocks that `datasets` itself writes on `push_to_hub`. Counts come from the data files (only the label and
attribute columns are read), and nothing time- or machine-dependent is added, so a card rebuilt from the same
folder is byte for byte the same file.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError, PipelineError, SkinsynthError
from .paths import inside as inside_root
from .shards import DATA_DIR, atomic_write_json, atomic_write_text, read_manifest

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
GRID_FILE = "sample_grid.png"
REPORTS_DIR = "reports"
REPORTS = ("benchmark", "fidelity", "memorization", "quality")  # reports/{name}.json -> cards/{name}_section.md, in this order
REAL_ATTRIBUTES = ("fitzpatrick", "body_site", "sex", "age")  # `prepare`'s attribute columns, where a source has them
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]

AKROUT_2023 = """@inproceedings{akrout2023diffusion,
  title         = {Diffusion-based Data Augmentation for Skin Disease Classification: Impact Across Original Medical Datasets to Fully Synthetic Images},
  author        = {Akrout, Mohamed and Gyepesi, B{\\'a}lint and Holl{\\'o}, P{\\'e}ter and Po{\\'o}r, Adrienn and Kincs{\\H{o}}, Bl{\\'a}ga and Solis, Stephen and Cirone, Katrina and Kawahara, Jeremy and Slade, Dekker and Abid, Latif and Kov{\\'a}cs, M{\\'a}t{\\'e} and Fazekas, Istv{\\'a}n},
  booktitle     = {Deep Generative Models, DGM4MICCAI 2023},
  series        = {Lecture Notes in Computer Science},
  publisher     = {Springer},
  year          = {2023},
  eprint        = {2301.04802},
  archivePrefix = {arXiv}
}"""


@dataclass(frozen=True)
class KnownDataset:
    """A training dataset recognised by name in a fine-tuned model's metadata, for its license and citation."""

    name: str
    license: str
    citation: str


KNOWN_DATASETS = {
    "ham10000": KnownDataset(
        "HAM10000",
        "cc-by-nc-sa-4.0",
        """@article{tschandl2018ham10000,
  title   = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}""",
    ),
}


def templates_dir() -> Path:
    """The card templates: `skinsynth/cards` in an installed wheel (pyproject maps the top-level `cards/` there),
    `cards/` beside the package in a source checkout."""
    installed = Path(__file__).resolve().parent / "cards"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "cards"


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` value for a row count."""
    return next((name for bound, name in SIZE_CATEGORIES if num_rows < bound), "n>1T")


def skinsynth_citation(version: str) -> str:
    return f"""@software{{skinsynth,
  title   = {{skinsynth: fully synthetic, labeled skin-disease image datasets with diffusion models}},
  author  = {{{{skinsynth contributors}}}},
  version = {{{version}}},
  note    = {{Implements Akrout et al., DGM4MICCAI 2023, arXiv:2301.04802}}
}}"""


def _cell(value) -> str:
    """A value as a Markdown table cell: pipes escaped, line breaks flattened, None as a dash."""
    return "—" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _render_section(name: str, **variables) -> str:
    """A card section from `cards/{name}.md`, rendered with the same Jinja defaults as `RepoCard.from_template`."""
    import jinja2

    return jinja2.Template((templates_dir() / f"{name}.md").read_text(encoding="utf-8")).render(**variables)


# ---------------------------------------------------------------- reading the data (labels and attributes only)


@dataclass(frozen=True)
class DataSummary:
    """What the card says about the data, read from the shard files themselves."""

    features: object  # datasets.Features, from the shards' Arrow schema
    columns: dict[str, dict[str, list]]  # split -> column -> values (label and attribute columns only)

    @property
    def label_names(self) -> list[str]:
        return list(self.features["label"].names)

    @property
    def split_rows(self) -> dict[str, int]:
        return {split: len(columns["label"]) for split, columns in self.columns.items()}


def _open_stream(path: Path):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(str(path)))


def read_summary(root: Path, manifest: dict, columns: list[str]) -> DataSummary:
    """Features and the label and given columns of every split, from the shards the manifest lists (memory-mapped;
    no image is decoded)."""
    import datasets

    features = None
    read: dict[str, dict[str, list]] = {}
    for split, info in manifest["splits"].items():
        values: dict[str, list] = {name: [] for name in ["label", *columns]}
        for shard in info["shards"]:
            path = inside_root(root, shard["file"], "the manifest's shard list")
            if not path.is_file():
                raise DatasetError(f"shard `{shard['file']}` is missing from {root}; run `skinsynth verify {root}` for details")
            table = _open_stream(path).read_all()
            features = features or datasets.Features.from_arrow_schema(table.schema)
            for name in values:
                if name not in table.column_names:
                    raise DatasetError(f"shard `{shard['file']}` has no `{name}` column; its columns are {table.column_names}")
                values[name] += table.column(name).to_pylist()
        read[split] = values
    if features is None or not isinstance(features.get("label"), datasets.ClassLabel):
        raise DatasetError(f"{root} has no shard with a ClassLabel `label` column to describe")
    return DataSummary(features, read)


def count_tables(summary: DataSummary, attributes: list[str], attribute_values: dict[str, list[str]]) -> list[dict]:
    """Per-class and per-attribute-value image counts for each split, as Markdown-ready tables.

    `attribute_values` fixes the row order (the recipe's values); values found in the data but not listed follow,
    sorted, and missing values (None) are shown as `unknown`. Ages written in years are counted in decades
    (`40-49`), as twins' recipes and prompts use them: one row per year says little and runs long.
    """
    from .recipe_from import BANDED, age_band

    splits = list(summary.columns)
    header = ["", *splits, "total"]

    def table(title: str, keys: list, counts: dict[str, Counter], names: dict) -> dict:
        rows = []
        for key in keys:
            per_split = [counts[split][key] for split in splits]
            rows.append([_cell(names.get(key, key)), *map(str, per_split), str(sum(per_split))])
        totals = [sum(counts[split].values()) for split in splits]
        rows.append(["**total**", *(f"**{n}**" for n in totals), f"**{sum(totals)}**"])
        return {"title": title, "header": [title.split(" per ")[-1], *header[1:]], "rows": rows}

    labels = {split: Counter(columns["label"]) for split, columns in summary.columns.items()}
    tables = [table("Images per class", list(range(len(summary.label_names))), labels, dict(enumerate(summary.label_names)))]
    for name in attributes:
        band = age_band if name in BANDED else (lambda value: value)
        counts = {split: Counter(None if v is None else band(v) for v in columns[name]) for split, columns in summary.columns.items()}
        seen = set().union(*counts.values())
        listed = list(dict.fromkeys(band(v) for v in attribute_values.get(name, [])))
        extra = sorted((v for v in seen if v is not None and v not in listed), key=_natural)
        keys = listed + extra + ([None] if None in seen else [])
        tables.append(table(f"Images per {name}", keys, counts, {None: "unknown"}))
    return tables


def _natural(value: str) -> tuple:
    """Sort key putting numbers (ages) in numeric order, before words."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def shared_groups(summary: DataSummary) -> int:
    """How many `group_id`s (lesions, patients) have images in more than one split: each one leaks between splits."""
    seen: Counter = Counter()
    for columns in summary.columns.values():
        seen.update(set(columns["group_id"]) - {None})
    return sum(count > 1 for count in seen.values())


def missing_values(summary: DataSummary, attribute_values: dict[str, list[str]]) -> list[str]:
    """`attribute=value` pairs the recipe asks for that no image in the dataset has."""
    found = {name: set().union(*(set(columns[name]) for columns in summary.columns.values())) for name in attribute_values}
    return [f"{name}={value}" for name, values in attribute_values.items() for value in values if value not in found[name]]


# ---------------------------------------------------------------- sample grid


def sample_grid(root: Path, manifest: dict, summary: DataSummary, split: str, per_class: int = 4, tile: int = 128):
    """A PIL image with one labeled row per class: the first `per_class` images of that class in `split`.

    Only the chosen rows' image bytes are read and decoded.
    """
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    names = summary.label_names
    wanted: dict[int, list[int]] = {label: [] for label in range(len(names))}
    for index, label in enumerate(summary.columns[split]["label"]):
        if len(wanted[label]) < per_class:
            wanted[label].append(index)
    images: dict[int, Image.Image] = {}
    offset = 0
    needed = sorted(i for rows in wanted.values() for i in rows)
    for shard in manifest["splits"][split]["shards"]:
        inside = [i for i in needed if offset <= i < offset + shard["num_rows"]]
        if inside:
            column = _open_stream(inside_root(root, shard["file"], "the manifest's shard list")).read_all().column("image")
            for i in inside:
                data = column[i - offset].as_py()["bytes"]
                images[i] = ImageOps.contain(Image.open(io.BytesIO(data)).convert("RGB"), (tile, tile), Image.Resampling.LANCZOS)
        offset += shard["num_rows"]

    font = ImageFont.load_default(size=15)
    pad = 6
    label_width = int(max(font.getlength(name) for name in names)) + 3 * pad
    title = f"{split} split: the first images of each class"
    top = 28
    columns = max(1, *(len(rows) for rows in wanted.values()))
    grid = Image.new("RGB", (label_width + columns * (tile + pad) + pad, top + len(names) * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((pad, 6), title, fill="black", font=font)
    for row, name in enumerate(names):
        y = top + row * (tile + pad)
        draw.text((pad, y + tile // 2), name, fill="black", font=font, anchor="lm")
        if not wanted[row]:
            draw.text((label_width, y + tile // 2), "(no images)", fill="gray", font=font, anchor="lm")
        for column, index in enumerate(wanted[row]):
            image = images[index]
            x = label_width + column * (tile + pad)
            grid.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
    return grid


def write_sample_grid(root: Path, manifest: dict, summary: DataSummary, per_class: int = 4) -> dict:
    """Write `sample_grid.png` beside the card; returns what the card says about it."""
    split = "train" if "train" in summary.columns else next(iter(summary.columns))
    buffer = io.BytesIO()
    sample_grid(root, manifest, summary, split, per_class).save(buffer, format="PNG", optimize=True)
    path = root / GRID_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return {"split": split, "per_class": per_class}


# ---------------------------------------------------------------- reports, models and licenses


def read_reports(root: Path) -> dict[str, dict]:
    """The reports in `root/reports/` that other commands wrote (benchmark, fidelity, memorization, quality)."""
    reports = {}
    for name in REPORTS:
        path = root / REPORTS_DIR / f"{name}.json"
        if path.is_file():
            try:
                reports[name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise DatasetError(f"report {path} cannot be read: {err}; fix or remove it, then rebuild the card") from None
    return reports


def report_sections(reports: dict[str, dict], label_names: list[str]) -> str:
    """The card sections of the reports present, each followed by a blank line (empty when there are none)."""
    return "".join(_render_section(f"{name}_section", report=report, label_names=label_names, cell=_cell).strip() + "\n\n" for name, report in reports.items())


def _finetunes(model: dict) -> list[dict]:
    """The fine-tuned parts of a generating model (full pipeline, LoRA, embeddings) and their metadata."""
    parts = [("pipeline", model.get("finetune")), ("LoRA", (model.get("lora") or {}).get("finetune"))]
    parts += [("embeddings", embedding.get("finetune")) for embedding in model.get("embeddings") or []]
    return [{"part": part, **metadata} for part, metadata in parts if metadata]


def known_dataset(training_data) -> KnownDataset | None:
    text = json.dumps(training_data).lower() if not isinstance(training_data, str) else training_data.lower()
    return next((known for key, known in KNOWN_DATASETS.items() if key in text), None)


def _hub_id(reference) -> str | None:
    """`reference` (a model or dataset) when it names a Hub repo (owner/name), not a local path: the card's YAML
    links Hub repos only."""
    if isinstance(reference, str) and re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", reference) and not Path(reference).exists():
        return reference
    return None


@dataclass(frozen=True)
class TrainingData:
    """A fine-tuned model's training data, as its card and the cards of datasets it generated describe it."""

    name: str
    source_dataset: str | None  # for `source_datasets` in the YAML
    license: str | None
    citation: str | None


def training_data(metadata: dict) -> TrainingData | None:
    data = metadata.get("training_data")
    if not data:
        return None
    known = known_dataset(data)
    name = known.name if known else (data if isinstance(data, str) else json.dumps(data, sort_keys=True))
    return TrainingData(
        name=name,
        source_dataset=_hub_id(data) or (known.name if known else None),
        license=metadata.get("training_license") or (known.license if known else None),
        citation=metadata.get("training_citation") or (known.citation if known else None),
    )


def _unique(items):
    return list(dict.fromkeys(item for item in items if item))


# ---------------------------------------------------------------- dataset cards


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

    from .privacy import privacy_section
    from .recipe import parse_recipe

    recipe = parse_recipe(manifest["recipe"], source=f"{root / 'generation.json'}: recipe")
    attributes = list(recipe.attributes)
    summary = read_summary(root, manifest, attributes)
    model = manifest["model"]
    finetunes = _finetunes(model)
    tuned = [(part, data) for part in finetunes if (data := training_data(part))]
    trained_on = [data for _, data in tuned]
    reports = read_reports(root)
    attribute_values = {name: list(spec.values) for name, spec in recipe.attributes.items()}


    card_data = _card_data(
        license=recipe.license,
        tags=["synthetic", "medical", "dermatology", "skin-lesions", "diffusion", "skinsynth"],
        annotations_creators=["machine-generated"],
        num_rows=sum(summary.split_rows.values()),
        source_datasets=_unique(t.source_dataset for t in trained_on),
        pretty_name=recipe.name,
        summary=summary,
        manifest=manifest,
    )
    other_licenses = _unique(t.license for t in trained_on if t.license and t.license != recipe.license)
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
        training_data_names=_unique(t.name for t in trained_on),
        privacy_section=privacy_section(root, manifest, reports, _unique(t.name for t in trained_on)),
        tuned=[{"part": part["part"], "data": data} for part, data in tuned],
        other_licenses=other_licenses,
        citations={"akrout": AKROUT_2023, "training": _unique(t.citation for t in trained_on), "skinsynth": skinsynth_citation(versions.get("skinsynth", _version()))},
    )
    return DatasetCard.from_template(card_data, template_path=str(templates_dir() / "synthetic_dataset.md"), **variables)


def _joint_fit(recipe, summary: DataSummary) -> dict[str, dict]:
    """`plan.joint_fit` of the generated train split (the first split when there is no `train`)."""
    from .plan import joint_fit

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
    names = _open_stream(first_path).schema.names if first_path.is_file() else []
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
        citations={"source": citation, "akrout": AKROUT_2023, "skinsynth": skinsynth_citation(manifest.get("library_versions", {}).get("skinsynth", _version()))},
    )
    return DatasetCard.from_template(card_data, template_path=str(templates_dir() / "real_dataset.md"), **variables)


def _version() -> str:
    from . import __version__

    return __version__


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


def add_report(dataset: str | Path, name: str, report: dict) -> Path:
    """Save `report` as DATASET/reports/NAME.json and rebuild the card with it: what the `--update-card` options of
    `benchmark` and the audits do. Returns the report's path."""
    if name not in REPORTS:
        raise ValueError(f"unknown report {name!r}; cards know {REPORTS}")
    root = report_folder(dataset)
    path = root / REPORTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)
    write_dataset_card(root)
    return path


# ---------------------------------------------------------------- model cards


def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write `model_dir/README.md` for a `skinsynth finetune` output from its `skinsynth_model.json`; returns its path.

    A `sample_grid.png` in the folder is embedded. `repo_id` is the model's Hub id, for the loading snippet.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .pipeline import MODEL_METADATA_FILE

    model_dir = Path(model_dir)
    path = model_dir / MODEL_METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{model_dir} has no {MODEL_METADATA_FILE}: is it the output of `skinsynth finetune`?") from None
    except (OSError, json.JSONDecodeError) as err:
        raise PipelineError(f"{path} cannot be read: {err}") from None
    trained_on = training_data(metadata)
    method = metadata.get("method")
    card_data = ModelCardData(
        license=trained_on.license if trained_on else None,  # unknown: the base model's own license applies
        base_model=_hub_id(metadata.get("base_model")),  # the body names a local base
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=_unique(["skinsynth", "dermatology", "medical", "text-to-image", "diffusers", "stable-diffusion", {"lora": "lora", "textual-inversion": "textual_inversion"}.get(method)]),
        datasets=[trained_on.source_dataset] if trained_on and _hub_id(metadata.get("training_data")) else None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(templates_dir() / "model.md"),
        repo_id=repo_id,
        load_id=repo_id or f"path/to/{model_dir.name}",
        folder_name=model_dir.name,
        metadata=metadata,
        method=method,
        training=trained_on,
        hyperparameters=sorted((metadata.get("hyperparameters") or {}).items()),
        has_grid=(model_dir / GRID_FILE).is_file(),
        cell=_cell,
        citations={"akrout": AKROUT_2023, "skinsynth": skinsynth_citation(_version())},
    )
    card_path = model_dir / CARD_FILE
    atomic_write_text(card_path, str(card))
    return card_path
