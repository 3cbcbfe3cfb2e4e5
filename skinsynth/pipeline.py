"""Load a diffusers text-to-image pipeline (Hub id or local folder), with LoRA weights, textual-inversion embeddings
and a scheduler override, and describe exactly which weights were used so every image is traceable.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PipelineError
from .fingerprint import folder_fingerprint

if TYPE_CHECKING:
    from .recipe import Recipe

MODEL_METADATA_FILE = "skinsynth_model.json"  # written by `skinsynth finetune`: base model, method, training data
DTYPES = ("auto", "float32", "float16", "bfloat16")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass
class ModelInfo:
    """What a manifest records about the model that made the images."""

    model: str
    revision: str | None
    commit: str | None  # the Hub commit that was downloaded; None for a local folder
    fingerprint: str | None  # sha256 over a local folder's files; None for a Hub snapshot (the commit says it all)
    pipeline_class: str
    scheduler: str
    dtype: str
    lora: dict | None = None
    embeddings: list[dict] = field(default_factory=list)
    finetune: dict | None = None  # the fine-tuned model's own metadata (base model, method, training data)
    family: str = "other"  # `skinsynth.families`: stable-diffusion, stable-diffusion-xl, stable-diffusion-3, flux

    def to_dict(self) -> dict:
        return asdict(self)

    def relative_to(self, folder: str | Path) -> ModelInfo:
        """The same record with local paths (model, LoRA, embeddings) written relative to `folder`, where the record
        is saved; Hub ids stay. The `finetune` records are the models' own, their paths relative to those models."""
        from .paths import model_record_paths, portable_reference

        record = model_record_paths({"model": self.model, "lora": self.lora, "embeddings": self.embeddings}, lambda path: portable_reference(path, folder))
        return replace(self, **record)

    def identity(self) -> dict:
        """The parts that decide which images come out: a resumed run must match them."""
        return {k: v for k, v in self.to_dict().items() if k in ("model", "revision", "commit", "fingerprint", "pipeline_class", "scheduler", "dtype", "lora", "embeddings")}




def _read_metadata(folder: Path) -> dict | None:
    path = folder / MODEL_METADATA_FILE if folder.is_dir() else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


ADAPTER_FIELDS = ("r", "lora_alpha", "target_modules", "use_dora")  # what a LoRA's header says about its shape
LORA_WEIGHT_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")  # diffusers' names, safetensors first


def lora_weights(path: Path, allow_pickle: bool) -> Path:
    """The one weights file `--lora path` loads: the file itself, or diffusers' `pytorch_lora_weights.*` in the
    folder, or its single top-level `.safetensors`. Subfolders (a training script's `checkpoint-*/`, `logs/`) are
    not the adapter."""
    if path.is_file():
        return path
    names = LORA_WEIGHT_FILES if allow_pickle else LORA_WEIGHT_FILES[:1]
    found = [path / name for name in names if (path / name).is_file()]
    if found:
        return found[0]
    others = sorted(p.name for p in path.glob("*.safetensors"))
    if len(others) == 1:
        return path / others[0]
    raise PipelineError(
        f"`--lora {path}` holds {'the weights files ' + ', '.join(others) if others else 'no LoRA weights file'}; "
        f"pass the folder holding {LORA_WEIGHT_FILES[0]} (what `skinsynth finetune --method lora` and diffusers' training scripts write), or the file itself"
    )


def lora_metadata(folder: Path, weights: Path) -> dict | None:
    """What a LoRA folder says about its training: skinsynth's `skinsynth_model.json`; else, for diffusers' training
    scripts (`train_text_to_image_lora.py` and the like), the model card they write (README.md: base model,
    license, tags, and the dataset its text names) and the adapter config saved in the weights' header."""
    if (skinsynth := _read_metadata(folder)) is not None:
        return skinsynth
    record = {}
    if (folder / "README.md").is_file():
        from huggingface_hub import ModelCard

        card = ModelCard.load(folder / "README.md")
        data = card.data.to_dict()
        record = {key: data[key] for key in ("base_model", "license", "tags", "instance_prompt") if data.get(key)}
        named = re.search(r"fine-tuned on the (\S+) dataset", card.text)
        dataset = (data.get("datasets") or [None])[0] or (named.group(1) if named else None)
        if dataset and _REPO_ID.match(dataset) and not Path(dataset).exists():  # a Hub id, never a local path
            record["training_data"] = dataset
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            adapter = (f.metadata() or {}).get("lora_adapter_metadata")
        if adapter:  # peft's LoraConfig, flattened per component: {"unet.r": 4, "unet.lora_alpha": 4, …}
            record["adapter"] = {}
            for key, value in json.loads(adapter).items():
                component, _, field = key.rpartition(".")
                if field in ADAPTER_FIELDS:
                    record["adapter"].setdefault(component, {})[field] = value
    return {"method": "lora", **record} if record else None


def resolve_model(model: str, revision: str | None = None) -> tuple[Path, str | None]:
    """A local pipeline folder for `model` and the Hub commit it came from (None when `model` is a local folder)."""
    local = Path(model).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise PipelineError(f"`{model}` is not a diffusers pipeline folder: it has no model_index.json. Pass a folder written by `save_pretrained` (or `skinsynth tiny-pipeline DIR`), or a Hub id.")
        return local, None
    if model.startswith((".", "/", "~")) or not _REPO_ID.match(model):
        raise PipelineError(f"model path `{model}` does not exist")
    from diffusers import DiffusionPipeline

    try:
        folder = Path(DiffusionPipeline.download(model, revision=revision, use_safetensors=True))
    except Exception as err:  # the Hub client raises many types (offline, 404, gated, no safetensors…)
        raise PipelineError(f"model `{model}` is neither a local folder nor loadable from the Hub: {err}") from err
    return folder, folder.name if folder.parent.name == "snapshots" else None


def _known_library(library) -> bool:
    """Whether a model_index.json component comes from code skinsynth already has (not from a module it would import)."""
    import importlib.util

    if library in (None, "diffusers", "transformers"):
        return True
    return isinstance(library, str) and library.isidentifier() and importlib.util.find_spec(f"diffusers.pipelines.{library}") is not None


def check_text_to_image(folder: Path) -> type:
    """The pipeline class named by `model_index.json`, if it makes images from text alone; else a `PipelineError`."""
    import diffusers
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    try:
        index = json.loads((folder / "model_index.json").read_text())
        class_name = index["_class_name"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise PipelineError(f"{folder / 'model_index.json'} is not a valid diffusers model index: {err}") from None
    if not isinstance(class_name, str):  # ["module", "Class"]: a class from a custom module
        raise PipelineError(f"{folder}/model_index.json names the custom pipeline class {class_name!r}; custom pipelines need --trust-remote-code")
    for name, component in index.items():
        if not name.startswith("_") and isinstance(component, list) and component and not _known_library(component[0]):
            raise PipelineError(f"{folder}/model_index.json names the custom class {component!r} for `{name}`; custom code runs only with --trust-remote-code")
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None:
        raise PipelineError(f"`{class_name}` (from {folder}/model_index.json) is not a diffusers pipeline class; custom pipelines need --trust-remote-code")
    parameters = inspect.signature(pipeline_class.__call__).parameters
    needs_image = any(name in parameters and parameters[name].default is inspect.Parameter.empty for name in ("image", "mask_image", "control_image"))
    if pipeline_class not in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values() and ("prompt" not in parameters or "image" in parameters or needs_image):
        raise PipelineError(f"`{class_name}` is not a text-to-image pipeline (it needs an input image); use a text-to-image model such as a StableDiffusionPipeline")
    return pipeline_class


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors(path: Path, option: str, allow_pickle: bool) -> None:
    """Refuse pickled weights (loading them can run any code) unless the user opted in; say how to convert them."""
    if allow_pickle:
        return
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    if any(f.suffix == ".safetensors" for f in files):
        return
    pickled = sorted(f.name for f in files if f.suffix in PICKLE_SUFFIXES)
    if pickled:
        source = path / pickled[0] if path.is_dir() else path
        raise PipelineError(
            f"`{option} {path}` holds pickled weights ({', '.join(pickled)}), which can run code when loaded; skinsynth loads "
            f"safetensors only. Convert them: python -c \"import torch, safetensors.torch as st; "
            f"st.save_file(torch.load('{source}', weights_only=True), '{source.with_suffix('.safetensors')}')\" "
            "(or pass --allow-pickle if you trust the file)"
        )


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str) -> str:
    """`device` if torch can use it on this machine (cpu, cuda, cuda:N, mps…); else a `PipelineError` naming it."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise PipelineError(f"`--device {device[:64]}` is not a device; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "mps":
        available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    elif parsed.type != "cpu":  # cuda, xpu…: the backend is there and has a device of that index
        backend = getattr(torch, parsed.type, None)
        available = callable(getattr(backend, "is_available", None)) and backend.is_available() and (parsed.index or 0) < backend.device_count()
    if parsed.type != "cpu" and not available:
        raise PipelineError(f"`--device {device}` is not available on this machine; use cpu, or leave --device out for the best available")
    return device


def torch_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise PipelineError(f"`--dtype {dtype}` is not supported; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def dtype_argument(dtype) -> dict:
    """The keyword that sets the weights' dtype in diffusers' `from_pretrained`: `dtype` since diffusers 0.40, which
    deprecates the `torch_dtype` that older versions (down to the floor in pyproject.toml) need."""
    import diffusers
    from packaging.version import Version

    return {"dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype": dtype}


def load_pipeline(
    model: str,
    *,
    revision: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    lora: str | None = None,
    embeddings: list[str] | tuple[str, ...] = (),
    scheduler: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    recipe: Recipe | None = None,
    cpu_offload: bool = False,
):
    """Load a text-to-image pipeline ready to generate, and the `ModelInfo` that a manifest records.

    Weights are read from safetensors only (LoRA and embeddings from pickled files with `allow_pickle=True`);
    remote code runs only with `trust_remote_code=True`. With a `recipe`, its generation settings are checked
    against the model's family (`skinsynth.families`) before any weights load, and loading follows them (SD3
    without its T5 encoder when the recipe drops it). `cpu_offload` keeps the models in CPU memory and moves each to
    the accelerator only while it runs (diffusers' `enable_model_cpu_offload`): peak accelerator memory falls to about
    the largest model's (the denoiser), for some speed; the images are the same.
    """
    import diffusers.utils.logging
    from diffusers import DiffusionPipeline
    from huggingface_hub.utils import are_progress_bars_disabled

    from .families import family_of_folder
    from .recipe import scheduler_class_name

    if are_progress_bars_disabled():  # `skinsynth -q` (diffusers has no environment switch of its own)
        diffusers.utils.logging.disable_progress_bar()
    device = check_device(device) if device else default_device()
    if cpu_offload and device.split(":")[0] == "cpu":
        raise PipelineError(
            "`--cpu-offload` keeps the models in CPU memory and moves each to the GPU only while it runs; on the CPU "
            "there is nothing to move: leave --cpu-offload out, or pass --device cuda"
        )
    folder, commit = resolve_model(model, revision)
    if not trust_remote_code:
        check_text_to_image(folder)
    family = family_of_folder(folder)
    if recipe is not None:
        family.check(recipe)
    for option, paths in (("--lora", [lora] if lora else []), ("--embeddings", embeddings)):  # before the slow part
        for path in paths:
            if Path(path).expanduser().exists():
                check_safetensors(Path(path).expanduser(), option, allow_pickle)
    try:
        components = family.load_components(recipe) if recipe is not None else {}
        pipe = DiffusionPipeline.from_pretrained(folder, **dtype_argument(torch_dtype(dtype, device)), use_safetensors=True, trust_remote_code=trust_remote_code, **components)
    except Exception as err:
        if "trust_remote_code" in str(err):  # diffusers names its Python argument; the user typed a command
            raise PipelineError(f"the pipeline in {folder} needs its own code (a custom component); pass --trust-remote-code if you trust it") from err
        raise PipelineError(f"could not load the pipeline in {folder}: {err}") from err

    lora_info = None
    if lora is not None:
        lora_path = Path(lora).expanduser()
        if not lora_path.exists():
            raise PipelineError(f"`--lora {lora}` does not exist; pass the folder written by `skinsynth finetune --method lora`")
        weights = lora_weights(lora_path, allow_pickle)
        try:
            pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, use_safetensors=not allow_pickle or None)
        except Exception as err:
            raise PipelineError(f"could not load LoRA weights from {lora}: {err}") from err
        # The fingerprint is the weights': a rewritten card, a training script's logs/ or checkpoints do not change it.
        lora_folder = lora_path if lora_path.is_dir() else lora_path.parent
        lora_info = {"path": str(lora), "fingerprint": folder_fingerprint(weights), "finetune": lora_metadata(lora_folder, weights)}

    embedding_info = []
    for path in embeddings:
        embedding_path = Path(path).expanduser()
        suffixes = (".safetensors", *PICKLE_SUFFIXES) if allow_pickle else (".safetensors",)
        files = sorted(f for f in embedding_path.iterdir() if f.suffix in suffixes) if embedding_path.is_dir() else [embedding_path]
        if not files or not all(f.is_file() for f in files):
            raise PipelineError(f"textual-inversion embeddings `{path}` not found; pass a .safetensors file or a folder of them")
        tokens = []
        for file in files:
            try:
                before = len(pipe.tokenizer)
                pipe.load_textual_inversion(str(file), use_safetensors=not allow_pickle or None)
                tokens += pipe.tokenizer.convert_ids_to_tokens(list(range(before, len(pipe.tokenizer))))
            except Exception as err:
                raise PipelineError(f"could not load textual-inversion embeddings from {file}: {err}") from err
        embedding_info.append({"path": str(path), "fingerprint": folder_fingerprint(embedding_path), "tokens": tokens, "finetune": _read_metadata(embedding_path)})

    if scheduler is not None:
        import diffusers

        try:
            name = scheduler_class_name(scheduler)
        except ValueError as err:
            raise PipelineError(str(err)) from None
        pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config)

    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    info = ModelInfo(
        model=model,
        revision=revision,
        commit=commit,
        fingerprint=None if commit else folder_fingerprint(folder),
        pipeline_class=type(pipe).__name__,
        scheduler=type(pipe.scheduler).__name__,
        dtype=str(pipe.dtype).removeprefix("torch."),
        lora=lora_info,
        embeddings=embedding_info,
        finetune=_read_metadata(folder),
        family=family.name,
    )
    return pipe, info
