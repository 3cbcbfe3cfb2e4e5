"""Label fidelity: do classifiers trained on real images see the class each synthetic image was made for?

The benchmark answers "what is a synthetic image worth" in half an hour; this audit answers the question behind it
in minutes, so experiments on the generator can be steered by it. It is the "GAN-test" of Shmelkov et al. (ECCV
2018): real-trained classifiers (the benchmark's saved `models/real-500`, its seeds as an ensemble, or any
`transformers` image classifier) predict the class of every synthetic image, and per-class recall and balanced
accuracy say how often they find the prompted class. The figures are read against three references:

- `real`: the same classifiers on the real test split, the ceiling a perfect generator would reach;
- `reconstruction`: the same classifiers on the real test images passed through the generator's own autoencoder
  (encode, decode), what its latent space can carry at all: fidelity cannot beat it;
- `shared_seeds`: one image per class and seed, every class with the same seeds (the same starting noise) and the
  same attributes. `prompt_following` is the share whose predicted class is the prompted one; `seed_following` the
  share predicted as their seed's most common class (1.0 for a model that ignores the class word, 1/K or so for one
  that follows it); `class_to_seed_distance` the mean pixel distance between classes at one seed over the distance
  between seeds within one class (about 0 when the seed decides the picture). The grid shows them: rows are
  classes, columns the shared seeds.

Writes fidelity.json, fidelity.md and fidelity_grid.png; `--update-card` puts the figures into the dataset card.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..benchmark.arms import label_key
from ..benchmark.metrics import evaluate
from ..card import add_report, report_folder
from ..data import label_names, open_dataset
from ..errors import DatasetError, SkinsynthError
from ..paths import model_record_paths, portable_reference, resolved_from
from ..shards import atomic_write_json, atomic_write_text, read_manifest
from . import reports
from .features import image_batches
from .filter import ClassifierEnsemble, classifier_folders

logger = logging.getLogger(__name__)

REPORT = "fidelity.json"
MARKDOWN = "fidelity.md"
GRID = "fidelity_grid.png"
DEFINITIONS = {
    "synthetic": "the classifiers' accuracy on the synthetic images, against the class each was generated for (GAN-test)",
    "real": "the same classifiers on the real test images: the ceiling",
    "reconstruction": "the same classifiers on the real test images encoded and decoded by the generator's autoencoder: "
    "what its latent space can carry",
    "prompt_following": "share of the shared-seed images (every class drawn from the same seeds) predicted as their prompted class",
    "seed_following": "share of the shared-seed images predicted as the most common class of their seed: 1.0 when the seed, "
    "not the class word, decides what the classifiers see",
    "class_to_seed_distance": "mean pixel distance between two classes at one seed, over the mean distance between two seeds "
    "within one class: about 0 when the class word does not change the picture, about 1 when it changes it as much as the seed",
}


def _probabilities(ensemble: ClassifierEnsemble, split, batch_size: int, desc: str, progress: bool, transform=None) -> np.ndarray:
    """The ensemble's class probabilities for a split's images, `batch_size` at a time (optionally `transform`ed,
    e.g. autoencoded, first): decoded images are never all in memory at once."""
    from tqdm.auto import tqdm

    total = (len(split) + batch_size - 1) // batch_size
    batches = tqdm(image_batches(split, batch_size), total=total, desc=desc, disable=not progress)
    return np.concatenate([ensemble.probabilities(transform(batch) if transform else batch) for batch in batches])


def _summary(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    metrics = evaluate(labels, probabilities, names)
    return {"n": int(len(labels)), **{k: metrics[k] for k in ("balanced_accuracy", "top1", "per_class_recall", "confusion_matrix")}}


def _generation_record(synthetic: str | Path) -> dict:
    """What the synthetic dataset's manifest says about how it was made ({} for a dataset without one)."""
    local = Path(synthetic).expanduser()
    if not local.is_dir():
        return {}
    try:
        name, manifest = read_manifest(local)
    except DatasetError:
        return {}
    if name != "generation.json":
        return {}
    model = model_record_paths(manifest.get("model") or {}, resolved_from(local))  # recorded relative to the dataset
    return {**manifest, "model": model}


def _model_folder(model: str | None, record: dict) -> str | None:
    """`--model`, else the local model folder the manifest names (a Hub id is used only when given explicitly)."""
    if model is not None:
        return model
    recorded = (record.get("model") or {}).get("model")
    if recorded and (Path(recorded).expanduser() / "model_index.json").is_file():
        return recorded
    if recorded:
        logger.warning("the generating model `%s` is not a local folder from here: no reconstructions or shared-seed grid; pass --model", recorded)
    return None


def reconstruct(vae, images: list, height: int, width: int) -> list:
    """`images` through the autoencoder at the generation size: center-cropped to its shape and resized (as training
    sees them), encoded (the posterior's mode) and decoded."""
    import torch
    from PIL import Image, ImageOps

    pixels = np.stack([np.asarray(ImageOps.fit(image.convert("RGB"), (width, height), Image.BICUBIC), np.float32) for image in images])
    tensor = torch.from_numpy(pixels / 127.5 - 1.0).permute(0, 3, 1, 2).to(vae.device, vae.dtype)
    with torch.no_grad():
        decoded = vae.decode(vae.encode(tensor).latent_dist.mode()).sample
    decoded = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in decoded]


def shared_seed_measures(images: list[list], predictions: np.ndarray, prompted: np.ndarray) -> dict:
    """`images[i][j]` is row i's class drawn with seed j, `prompted[i]` that class and `predictions[i, j]` the
    class predicted for the image (both as label ids)."""
    num_seeds = predictions.shape[1]
    prompted = np.asarray(prompted)[:, None]
    modal = np.array([np.bincount(predictions[:, j]).argmax() for j in range(num_seeds)])
    pixels = np.stack([np.stack([np.asarray(image.convert("RGB"), np.float32) for image in row]) for row in images])  # (C, S, H, W, 3)

    def mean_distance(axis: int) -> float:
        moved = np.moveaxis(pixels, axis, 0)  # pairs along `axis`, all else fixed
        n = moved.shape[0]
        distances = [np.abs(moved[a] - moved[b]).mean() for a in range(n) for b in range(a + 1, n)]
        return float(np.mean(distances)) if distances else float("nan")

    between_classes, between_seeds = mean_distance(0), mean_distance(1)
    return {
        "num_seeds": int(num_seeds),
        "prompt_following": float((predictions == prompted).mean()),
        "seed_following": float((predictions == modal[None, :]).mean()),
        "class_to_seed_distance": between_classes / between_seeds if between_seeds > 0 else None,
        "predictions": predictions.tolist(),
    }


def audit_fidelity(
    synthetic: str | Path,
    classifiers: list[str] | tuple[str, ...],
    out: str | Path,
    *,
    real: str | Path | None = None,
    real_split: str = "test",
    model: str | None = None,
    seeds: int = 8,
    batch_size: int = 32,
    update_card: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Label fidelity of every split of `synthetic` (see the module docstring); mirrors `skinsynth audit fidelity`.

    `classifiers`: model folders, Hub ids or folders of them (a benchmark's `models/real-500`: its seeds averaged).
    `real`: the real dataset whose `real_split` gives the ceiling and the reconstructions. `model`: the generating
    pipeline, for the reconstructions and the shared-seed grid (default: the local folder `generation.json` names);
    `seeds` shared seeds per class (0: no grid). Writes the reports into `out`; returns the report."""
    if seeds < 0:
        raise SkinsynthError(f"`--seeds` is a number of shared seeds, 0 or more, got {seeds}")
    if update_card:
        report_folder(synthetic)
    syn = open_dataset(synthetic)
    names = label_names(syn)
    parts = {split: part for split, part in syn.items() if len(part)}
    if not parts:
        raise DatasetError(f"the synthetic dataset `{synthetic}` has no images")
    real_ds = open_dataset(real, required_splits=(real_split,)) if real is not None else None
    record = _generation_record(synthetic)
    model = _model_folder(model, record)
    if seeds and model is not None and "recipe" not in record:
        raise SkinsynthError(f"the shared-seed grid uses the recipe in `{synthetic}/generation.json`, which is missing; pass --seeds 0")
    ensemble = ClassifierEnsemble(classifier_folders(classifiers), names, device)
    out = reports.prepare_output(out)  # once the inputs are known good: a refused audit leaves no folder behind

    report: dict = {"synthetic": portable_reference(synthetic, out), "classifiers": [portable_reference(p, out) for p in ensemble.paths], "class_names": names}
    labels = np.concatenate([np.asarray(part["label"], dtype=int) for part in parts.values()])
    probabilities = np.concatenate([_probabilities(ensemble, part, batch_size, f"classifying synthetic {split}", progress) for split, part in parts.items()])
    report["synthetic_fidelity"] = _summary(labels, probabilities, names)

    pipe = None
    if model is not None:
        from ..pipeline import load_pipeline

        recorded = record.get("model") or {}
        same = model == recorded.get("model")  # then with the LoRA and embeddings the dataset was made with
        lora = (recorded.get("lora") or {}).get("path") if same else None
        embeddings = [e["path"] for e in recorded.get("embeddings") or []] if same else []
        pipe, _ = load_pipeline(model, device=device, lora=lora, embeddings=embeddings)
        report["model"] = portable_reference(model, out)
    recipe = None
    if "recipe" in record:
        from ..recipe import parse_recipe

        recipe = parse_recipe(record["recipe"], source=f"{synthetic}/generation.json")

    if real_ds is not None:
        real_part, real_names = real_ds[real_split], label_names(real_ds)
        by_key = {label_key(name): k for k, name in enumerate(names)}
        mapped = np.array([by_key.get(label_key(real_names[k]), -1) for k in real_part["label"]])
        if not (mapped >= 0).any():
            raise DatasetError(f"no class of the real dataset `{real}` ({real_names}) is a synthetic class ({names}); compare datasets with the same class names")
        rows = np.flatnonzero(mapped >= 0)
        real_part = real_part.select(rows.tolist())
        real_probabilities = _probabilities(ensemble, real_part, batch_size, f"classifying real {real_split}", progress)
        report["real"] = {"dataset": portable_reference(real, out), "split": real_split, "rows_of_other_classes": int((mapped < 0).sum())}
        report["real_fidelity"] = _summary(mapped[rows], real_probabilities, names)
        if pipe is not None:
            height, width = (recipe.generation.height, recipe.generation.width) if recipe else (pipe.vae.config.sample_size,) * 2
            reconstructed = _probabilities(ensemble, real_part, batch_size, "classifying reconstructions", progress,
                                           transform=lambda batch: reconstruct(pipe.vae, batch, height, width))
            report["reconstruction_fidelity"] = _summary(mapped[rows], reconstructed, names)

    if pipe is not None and recipe is not None and seeds:
        from ..finetune.captions import validation_prompts
        from ..finetune.validation import image_grid, shared_seed_images

        prompts = validation_prompts(recipe, [spec.text for spec in recipe.classes], seeds)
        seed = recipe.generation.seed
        images = shared_seed_images(pipe, prompts, recipe, seed)
        order = [names.index(spec.name) for spec in recipe.classes]  # recipe order -> dataset label ids
        predicted = np.stack([ensemble.probabilities(row).argmax(axis=1) for row in images])
        report["shared_seeds"] = {**shared_seed_measures(images, predicted, order), "seeds": [seed + j for j in range(seeds)],
                                  "rows": [spec.name for spec in recipe.classes], "prompts": [[p.text for p in row] for row in prompts]}
        if recipe.prompts.class_free_negative:
            report["shared_seeds"]["negative_prompts"] = [[p.negative for p in row] for row in prompts]
        image_grid(images, [spec.name for spec in recipe.classes]).save(out / GRID)
    report["definitions"] = DEFINITIONS
    atomic_write_json(out / REPORT, report)
    atomic_write_text(out / MARKDOWN, render_markdown(report))
    if update_card:
        add_report(synthetic, "fidelity", report, written_in=out, path_fields=("synthetic", "classifiers", "model", "real.dataset"))
    return report


def _row(name: str, summary: dict | None, names: list[str]) -> str:
    if summary is None:
        return ""
    recalls = " | ".join("—" if summary["per_class_recall"][c] is None else f"{summary['per_class_recall'][c]:.2f}" for c in names)
    return f"| {name} | {summary['n']} | **{summary['balanced_accuracy']:.3f}** | {summary['top1']:.3f} | {recalls} |\n"


def render_markdown(report: dict) -> str:
    """The report as a markdown table (also what the dataset card shows)."""
    names = report["class_names"]
    text = "| images | n | balanced accuracy | top-1 | " + " | ".join(names) + " |\n|---|---:|---:|---:|" + "---:|" * len(names) + "\n"
    text += _row("synthetic (prompted class)", report["synthetic_fidelity"], names)
    text += _row("real test (ceiling)", report.get("real_fidelity"), names)
    text += _row("real test, autoencoded", report.get("reconstruction_fidelity"), names)
    real = report.get("real_fidelity")
    if real and real["balanced_accuracy"] > 0:
        text += f"\nSynthetic / real balanced accuracy: **{report['synthetic_fidelity']['balanced_accuracy'] / real['balanced_accuracy']:.2f}**.\n"
    shared = report.get("shared_seeds")
    if shared:
        distance = shared["class_to_seed_distance"]
        text += (f"\nShared seeds ({shared['num_seeds']} per class, same noise and attributes for every class): prompt following "
                 f"**{shared['prompt_following']:.2f}**, seed following {shared['seed_following']:.2f}, class-to-seed pixel distance "
                 f"{'n/a' if distance is None else f'{distance:.2f}'}.\n")
    text += "\n" + "".join(f"- **{key}**: {value}.\n" for key, value in report["definitions"].items())
    return text
