"""The classifiers a benchmark trains, saved as standard transformers model folders, for filtering and for the Hub.

Each saved run is `DIR/models/{arm}/seed{seed}/`: `save_pretrained` of the model (safetensors, `id2label` with the
real dataset's class names) and of an image processor that does what the benchmark's evaluation did (resize the
short side, centre crop, the model's mean and std), plus a model card whose `model-index` holds the test metrics.
A whole arm's folder, `DIR/models/{arm}/`, passed as `--classifier` is the ensemble of its seeds.

`--save-models` chooses which runs are saved:
    real  every seed of the real-only arms (the default: what filtering synthetic images needs)
    best  per arm, the seed with the best validation score (by `--select-by`)
    all   every arm and seed
    none  nothing
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

SAVE_MODELS = ("real", "best", "all", "none")
RUN_FILE = "skinsynth_run.json"
METRIC_NAMES = {"balanced_accuracy": "Balanced accuracy", "top1": "Top-1 accuracy", "top2": "Top-2 accuracy", "top3": "Top-3 accuracy", "macro_f1": "Macro F1"}
METRIC_TYPES = {"balanced_accuracy": "balanced_accuracy", "top1": "accuracy", "top2": "top_k_accuracy", "top3": "top_k_accuracy", "macro_f1": "f1"}


def model_folder(out: Path, condition: str, seed: int) -> Path:
    return Path(out) / "models" / condition / f"seed{seed}"


def saved_key(folder: Path) -> str | None:
    """The digest of the run key a saved model folder was written for (None: no complete folder, or one saved
    without a key by an older skinsynth)."""
    try:
        return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))["key"]["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def eval_results(metrics: dict, dataset_name: str, dataset_type: str, split: str = "test") -> list:
    """`huggingface_hub.EvalResult`s of one set of metrics (a value per name, or `{"mean": …}` per name)."""
    from huggingface_hub import EvalResult

    results = []
    for key, title in METRIC_NAMES.items():
        if key not in metrics:
            continue
        value = metrics[key]["mean"] if isinstance(metrics[key], dict) else metrics[key]
        args = {"k": int(key[-1])} if key in ("top2", "top3") else ({"average": "macro"} if key == "macro_f1" else None)
        results.append(EvalResult(task_type="image-classification", task_name="Image Classification", dataset_type=dataset_type, dataset_name=dataset_name,
                                  dataset_split=split, metric_type=METRIC_TYPES[key], metric_name=title, metric_value=round(float(value), 6), metric_args=args))
    return results


def model_index(name: str, metrics: dict, dataset_name: str, dataset_type: str, split: str = "test") -> list[dict]:
    """The Hub's `model-index` metadata (as in a model card's YAML) for one model's metrics on one dataset split."""
    from huggingface_hub.repocard_data import eval_results_to_model_index

    return eval_results_to_model_index(name, eval_results(metrics, dataset_name, dataset_type, split))


def image_processor(mean: tuple[float, ...], std: tuple[float, ...], size: int):
    """An image processor doing what the benchmark's evaluation does: short side to `size`, centre crop, normalize."""
    from transformers import BitImageProcessor

    return BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True, resample=2,  # PIL bilinear
        image_mean=list(mean), image_std=list(std), do_convert_rgb=True,
    )


def model_card(name: str, run: dict, settings: dict, license: str | None, dataset_name: str, dataset_type: str) -> str:
    """The model card of one saved run: arm, data, seed, validation and test metrics, the real data's license."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..card import templates_dir

    data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="image-classification", model_name=name,
        tags=["skinsynth", "dermatology", "medical", "image-classification", "skin-lesions"],
        eval_results=eval_results(run["test"], dataset_name, dataset_type),
    )
    return str(ModelCard.from_template(data, template_path=str(templates_dir() / "classifier.md"), name=name, run=run, settings=settings,
                                       license=license, metric_names=METRIC_NAMES))


def save_classifier(folder: Path, model, processor, card: str, run: dict) -> None:
    """Write the model folder next to its place and rename it in, so a folder that exists is complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
