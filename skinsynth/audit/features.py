"""Image feature spaces for the audits: every extractor maps a dataset split to float32 rows of unit length.

Cosine similarity (memorization) and k-NN balls (quality) are only as meaningful as the space they are taken in, so
the space is always named in the report. Three kinds, one interface (`FeatureExtractor.extract(split)`):

- a Hub id or local folder of a transformers vision backbone (`AutoModel` + `AutoImageProcessor`): its pooled
  output, or the CLS token. DINOv2 is the default when the Hub is reachable (Stein et al. 2023: Inception features
  mislead on diffusion images);
- `classifier:DIR`: the penultimate layer of an `AutoModelForImageClassification` checkpoint (a `skinsynth
  benchmark` model), i.e. the space in which it tells the classes apart;
- `contrastive`: a small CNN that skinsynth trains on the real training split itself (SimCLR's NT-Xent loss, with
  flips, 90° rotations, crops and JPEG re-compression as positives), so an audit works with no download. Its
  embedding is averaged over the eight flips/rotations of the image, so those copies map to the same point exactly.

Images are decoded batch by batch, so memory holds one batch of images plus the output matrix.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import PipelineError, SkinsynthError

logger = logging.getLogger(__name__)

DEFAULT_HUB_FEATURES = "facebook/dinov2-base"
CONTRASTIVE_DIR = "contrastive-encoder"


def image_batches(split, batch_size: int):
    """The split's images as lists of RGB PIL images, `batch_size` at a time."""
    images = split.select_columns(["image"])
    for start in range(0, len(images), batch_size):
        yield [image.convert("RGB") for image in images[start : start + batch_size]["image"]]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class FeatureExtractor(ABC):
    """Maps images to rows of a fixed-width matrix; `name` is what reports record as the feature space."""

    name: str
    batch_size: int = 32

    @abstractmethod
    def embed(self, images: list) -> np.ndarray:
        """Raw (un-normalized) features of a batch of RGB PIL images, shape (len(images), dim)."""

    def extract(self, split, desc: str = "features", progress: bool = True) -> np.ndarray:
        """float32 features of every image of `split`, L2-normalized, in row order."""
        from tqdm.auto import tqdm

        out: np.ndarray | None = None
        row = 0
        with tqdm(total=len(split), unit="img", desc=desc, disable=not progress) as bar:
            for batch in image_batches(split, self.batch_size):
                features = l2_normalize(np.asarray(self.embed(batch), dtype=np.float32).reshape(len(batch), -1))
                if out is None:
                    out = np.empty((len(split), features.shape[1]), dtype=np.float32)
                out[row : row + len(batch)] = features
                row += len(batch)
                bar.update(len(batch))
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def torch_device(device: str | None) -> str:
    from ..pipeline import default_device

    return device or default_device()


def load_image_model(path: str, auto_class: str = "AutoModel", device: str | None = None):
    """(model in eval mode, image processor) from a Hub id or folder, with one clear error if either fails."""
    import transformers

    try:
        model = getattr(transformers, auto_class).from_pretrained(path)
        processor = transformers.AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"could not load a transformers vision model from `{path}` ({auto_class}): {err}") from err
    return model.to(torch_device(device)).eval(), processor


class HubFeatures(FeatureExtractor):
    """A transformers vision backbone: pooled output if it has one, else the CLS token (or the spatial mean)."""

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32):
        self.name = model
        self.batch_size = batch_size
        self.model, self.processor = load_image_model(model, "AutoModel", device)

    def embed(self, images: list) -> np.ndarray:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            if hasattr(self.model, "get_image_features"):  # CLIP-like: the image tower's projected embedding
                features = self.model.get_image_features(pixel_values=inputs["pixel_values"])
                features = getattr(features, "pooler_output", features)
            else:
                output = self.model(pixel_values=inputs["pixel_values"])
                pooled = getattr(output, "pooler_output", None)
                hidden = output.last_hidden_state
                if pooled is not None and pooled.ndim == 2:
                    features = pooled
                elif hidden.ndim == 3:
                    features = hidden[:, 0]
                else:
                    features = hidden.flatten(2).mean(-1)
        return features.float().cpu().numpy()


def _classification_head(model):
    """The final linear layer of an image classifier (transformers names it `classifier`, sometimes `head`/`fc`)."""
    for name in ("classifier", "head", "fc"):
        module = getattr(model, name, None)
        if module is not None:
            return module
    raise PipelineError(f"cannot find the classification head of {type(model).__name__} (looked for `classifier`, `head`, `fc`)")


class ClassifierFeatures(FeatureExtractor):
    """The input of an image classifier's head: the space in which the classifier separates the classes."""

    def __init__(self, path: str, device: str | None = None, batch_size: int = 32):
        self.name = f"classifier:{path}"
        self.batch_size = batch_size
        self.model, self.processor = load_image_model(path, "AutoModelForImageClassification", device)
        self._captured = None
        _classification_head(self.model).register_forward_pre_hook(self._capture)

    def _capture(self, module, args) -> None:
        self._captured = args[0]

    def embed(self, images: list) -> np.ndarray:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            self.model(pixel_values=inputs["pixel_values"])
        return self._captured.flatten(1).float().cpu().numpy()


# --- contrastive: a small encoder trained on the real training split --------------------------------------------


@dataclass(frozen=True)
class ContrastiveConfig:
    """How the `contrastive` encoder is trained. Small on purpose: it learns what "the same photo" means on the
    real training images (invariance to flips, rotations, crops and JPEG), not what a lesion is."""

    image_size: int = 64
    width: int = 32
    embed_dim: int = 128
    steps: int = 500
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float = 0.2
    max_images: int = 20_000  # training images sampled from a larger split (the encoder, not the audit, is capped)
    seed: int = 0

    def __post_init__(self):
        for field_name in ("image_size", "width", "embed_dim", "steps", "batch_size", "max_images"):
            if getattr(self, field_name) < (2 if field_name == "batch_size" else 1):
                raise SkinsynthError(f"contrastive `{field_name}` must be positive, got {getattr(self, field_name)}")


def _encoder(config: ContrastiveConfig):
    """Four strided conv blocks and global average pooling (about 0.2M parameters at width 32)."""
    from torch import nn

    w = config.width
    layers, channels = [], 3
    for out in (w, 2 * w, 4 * w, 4 * w):
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, config.embed_dim))
    return nn.ModuleDict({"backbone": backbone, "head": head})


def _resize(image, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC))


def _augment(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One positive view: random crop (40-100% of the area), flip, 90° rotation, JPEG re-compression, brightness."""
    from PIL import Image

    size = pixels.shape[0]
    side = int(round(size * np.sqrt(rng.uniform(0.4, 1.0))))
    top, left = rng.integers(0, size - side + 1, size=2)
    view = Image.fromarray(pixels[top : top + side, left : left + side]).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        view.save(buffer, format="JPEG", quality=int(rng.integers(30, 96)))
        view = Image.open(buffer).convert("RGB")
    array = np.asarray(view).astype(np.float32) * rng.uniform(0.85, 1.15)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    return np.rot90(array, k=int(rng.integers(4))).clip(0, 255)


def _to_tensor(arrays: list[np.ndarray]):
    import torch

    batch = np.stack([np.ascontiguousarray(a, dtype=np.float32) for a in arrays]) / 127.5 - 1.0
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def nt_xent(z1, z2, temperature: float):
    """SimCLR's normalized-temperature cross-entropy: each view must pick its partner among the 2N-1 others."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def split_digest(split) -> str:
    """sha256 over the split's image bytes: names the training data a cached encoder was fitted on."""
    import datasets

    raw = split.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    digest = hashlib.sha256(str(len(raw)).encode())
    for start in range(0, len(raw), 1024):
        for image in raw[start : start + 1024]["image"]:
            digest.update(image["bytes"] or (image["path"] or "").encode())
    return digest.hexdigest()


def train_contrastive(train_split, config: ContrastiveConfig, device: str = "cpu", progress: bool = True):
    """Fit the encoder on (at most `max_images` of) the real training images; seeded, so a rerun gives the same weights."""
    import torch
    from tqdm.auto import tqdm

    if len(train_split) < 2:
        raise SkinsynthError(f"the `contrastive` features need at least 2 real training images, got {len(train_split)}")
    rng = np.random.default_rng(config.seed)
    indices = np.sort(rng.permutation(len(train_split))[: config.max_images])
    subset = train_split.select(indices.tolist())
    pixels = np.stack([_resize(image, config.image_size) for batch in image_batches(subset, 256) for image in batch])
    torch.manual_seed(config.seed)
    model = _encoder(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    batch_size = min(config.batch_size, len(pixels))
    model.train()
    with tqdm(range(config.steps), desc="training contrastive encoder", unit="step", disable=not progress) as bar:
        for _ in bar:
            chosen = rng.choice(len(pixels), size=batch_size, replace=False)
            views = [_to_tensor([_augment(pixels[i], rng) for i in chosen]).to(device) for _ in range(2)]
            z1, z2 = (model["head"](model["backbone"](v)) for v in views)
            loss = nt_xent(z1, z2, config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval(), float(loss.item())


class ContrastiveFeatures(FeatureExtractor):
    """The contrastive embedding (the space NT-Xent trained for "same photo" under cosine), averaged over the image's
    8 flips/rotations."""

    name = "contrastive"

    def __init__(self, model, config: ContrastiveConfig, device: str = "cpu", batch_size: int = 64):
        self.model = model.to(device)
        self.config = config
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def fit_or_load(cls, train_split, cache_dir: str | Path, config: ContrastiveConfig = ContrastiveConfig(), device: str | None = None,
                    progress: bool = True) -> ContrastiveFeatures:
        """The encoder cached in `cache_dir/contrastive-encoder/` if it was fitted on the same images with the same
        config; otherwise train one (on `device`) and cache it."""
        import torch
        from safetensors.torch import load_file, save_file

        from ..shards import atomic_write_json

        folder = Path(cache_dir) / CONTRASTIVE_DIR
        identity = {"config": asdict(config), "train_sha256": split_digest(train_split)}
        meta_path = folder / "config.json"
        model = _encoder(config)
        if meta_path.is_file() and json.loads(meta_path.read_text()).get("identity") == identity:
            model.load_state_dict(load_file(folder / "model.safetensors"))
            logger.info("using the contrastive encoder cached in %s", folder)
            return cls(model.eval(), config, torch_device(device))
        model, final_loss = train_contrastive(train_split, config, torch_device(device), progress)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".model.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, folder / "model.safetensors")
        atomic_write_json(meta_path, {"identity": identity, "final_loss": round(final_loss, 4), "torch": torch.__version__})
        return cls(model, config, torch_device(device))

    def embed(self, images: list) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        batch = _to_tensor([_resize(image, self.config.image_size) for image in images]).to(self.device)
        with torch.no_grad():
            views = [torch.rot90(flipped, k, dims=(2, 3)) for flipped in (batch, batch.flip(3)) for k in range(4)]
            features = torch.stack([F.normalize(self.model["head"](self.model["backbone"](v)), dim=1) for v in views]).mean(0)
        return features.cpu().numpy()


def default_features() -> str:
    """DINOv2 when the Hub can be reached (Stein et al. 2023), otherwise the self-trained `contrastive` encoder."""
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return "contrastive"
    try:
        model_info(DEFAULT_HUB_FEATURES, timeout=5)
    except Exception:  # any network or Hub failure means: offline
        logger.info("the Hub is not reachable; using `contrastive` features")
        return "contrastive"
    return DEFAULT_HUB_FEATURES


def load_extractor(spec: str, *, train_split=None, cache_dir: str | Path | None = None, device: str | None = None,
                   contrastive: ContrastiveConfig = ContrastiveConfig(), progress: bool = True) -> FeatureExtractor:
    """The extractor named by `spec`: "auto", "contrastive", "classifier:DIR", or a Hub id / model folder.

    `contrastive` is trained on `train_split` (the real training images) and cached in `cache_dir`.
    """
    if spec == "auto":
        spec = default_features()
    if spec == "contrastive":
        if train_split is None or cache_dir is None:
            raise SkinsynthError("the `contrastive` features need the real training split and a folder to cache the encoder in")
        return ContrastiveFeatures.fit_or_load(train_split, cache_dir, contrastive, device, progress)
    if spec.startswith("classifier:"):
        path = spec.removeprefix("classifier:")
        if not path:
            raise SkinsynthError("`--features classifier:DIR` needs the folder of an image classifier after the colon")
        return ClassifierFeatures(path, device)
    if not spec:
        raise SkinsynthError("`--features` is empty: give a Hub id, a model folder, `classifier:DIR` or `contrastive`")
    return HubFeatures(spec, device)
