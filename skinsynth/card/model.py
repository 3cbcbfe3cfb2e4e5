"""The model card of a `skinsynth finetune` output, from its `skinsynth_model.json`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import PipelineError
from ..shards import atomic_write_text
from .provenance import hub_id, training_data, unique
from .templates import AKROUT_2023, CARD_FILE, GRID_FILE, cell, skinsynth_citation, templates_dir, version


def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write `model_dir/README.md` for a `skinsynth finetune` output from its `skinsynth_model.json`; returns its path.

    A `sample_grid.png` in the folder is embedded. `repo_id` is the model's Hub id, for the loading snippet.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from ..pipeline import MODEL_METADATA_FILE

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
    family = metadata.get("family", "stable-diffusion")  # models trained before families were recorded are SD 1.x/2.x
    card_data = ModelCardData(
        license=trained_on.license if trained_on else None,  # unknown: the base model's own license applies
        base_model=hub_id(metadata.get("base_model")),  # the body names a local base
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=unique(["skinsynth", "dermatology", "medical", "text-to-image", "diffusers", family if family != "other" else None,
                     {"lora": "lora", "textual-inversion": "textual_inversion", "dreambooth": "dreambooth"}.get(method)]),
        datasets=[trained_on.source_dataset] if trained_on and hub_id(metadata.get("training_data")) else None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(templates_dir() / "model.md"),
        repo_id=repo_id,
        load_id=repo_id or f"path/to/{model_dir.name}",
        folder_name=model_dir.name,
        metadata=metadata,
        method=method,
        loads_as=(metadata.get("dreambooth") or {}).get("adapter", method),  # how the weights load: DreamBooth's are its adapter's
        training=trained_on,
        hyperparameters=sorted((metadata.get("hyperparameters") or {}).items()),
        has_grid=(model_dir / GRID_FILE).is_file(),
        cell=cell,
        citations={"akrout": AKROUT_2023, "skinsynth": skinsynth_citation(version())},
    )
    card_path = model_dir / CARD_FILE
    atomic_write_text(card_path, str(card))
    return card_path
