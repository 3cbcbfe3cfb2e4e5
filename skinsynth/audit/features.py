"""Image feature spaces for the audits: every extractor maps a dataset split to float32 rows.

Cosine similarity (memorization) and k-NN balls (quality) are only as meaningful as the space they are taken in, so
the space is always named in the report. One interface (`FeatureExtractor.extract(split)`), these kinds:

- `dinov2-vitl14` and `inception-v3`: the published extractors of FD-DINOv2 (Stein et al. 2023) and FID (Heusel et
  al. 2017), with their published preprocessing, so a Fréchet distance is comparable with the literature;

- a Hub id or local folder of a transformers vision backbone (`AutoModel` + `AutoImageProcessor`): its pooled
  output, or the CLS token. DINOv2 is the default when the Hub is reachable (Stein et al. 2023: Inception features
  mislead on diffusion images);
- `classifier:DIR`: the penultimate layer of an `AutoModelForImageClassification` checkpoint (a `skinsynth
  benchmark` model), i.e. the space in which it tells the classes apart;
- `contrastive`: a small CNN that skinsynth trains on the real training split itself (SimCLR's NT-Xent loss, with
  crops, flips, any rotation, colour jitter and JPEG re-compression as positives: the alterations of the planted
  copies), so an audit works with no download. Its embedding is averaged over the eight flips / 90° rotations of
  the image, so those copies map to the same point exactly.

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
        """float32 raw features of every image of `split`, in row order. Raw, because the Fréchet distance and KID are
        published on raw features; cosine similarity and the k-NN metrics normalize them (`l2_normalize`)."""
        from tqdm.auto import tqdm

        out: np.ndarray | None = None
        row = 0
        with tqdm(total=len(split), unit="img", desc=desc, disable=not progress) as bar:
            for batch in image_batches(split, self.batch_size):
                features = np.asarray(self.embed(batch), dtype=np.float32).reshape(len(batch), -1)
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


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fixed_size_batch(images: list, size: int, resample: str):
    """Images resized to size x size (no crop, aspect not kept) with PIL's `resample` filter, scaled to [0, 1] and
    normalized with ImageNet's mean and std: the preprocessing of the published FD-DINOv2 and FID extractors."""
    import torch
    from PIL import Image

    filter_ = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[resample]
    arrays = np.stack([np.asarray(image.convert("RGB").resize((size, size), filter_), dtype=np.float32) / 255.0 for image in images])
    arrays = (arrays - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


DINOV2_VITL14 = "facebook/dinov2-large"  # the ViT-L/14 of FD-DINOv2
DINOV2_VITL14_CONFIG = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4, "patch_size": 14, "image_size": 518}


class Dinov2Features(FeatureExtractor):
    """FD-DINOv2 features (Stein et al. 2023, as in their `dgm-eval`): DINOv2 ViT-L/14, each image resized to
    224 x 224 with a bicubic filter (no crop), ImageNet normalization, and the final layer-normed CLS token (1024
    values): `x_norm_clstoken` of the torch-hub model, `pooler_output` of transformers' `Dinov2Model`. Fréchet
    distances in this space are FD-DINOv2 values, comparable with published ones."""

    image_size = 224

    def __init__(self, source: str = DINOV2_VITL14, device: str | None = None, batch_size: int = 32, model=None):
        self.name = "dinov2-vitl14" + ("" if source == DINOV2_VITL14 else f":{source}")
        self.batch_size = batch_size
        if model is None:
            from transformers import Dinov2Model

            try:
                model = Dinov2Model.from_pretrained(source)
            except (OSError, ValueError) as err:
                raise PipelineError(f"could not load the DINOv2 ViT-L/14 from `{source}`: {err}; give `dinov2-vitl14:DIR` with a local copy") from err
        got = {key: getattr(model.config, key) for key in DINOV2_VITL14_CONFIG if key != "image_size"}
        expected = {key: value for key, value in DINOV2_VITL14_CONFIG.items() if key != "image_size"}
        if got != expected:
            raise PipelineError(f"`{source}` is not a DINOv2 ViT-L/14 ({got}); FD-DINOv2 is defined with {expected}")
        self.model = model.to(torch_device(device)).eval()

    def embed(self, images: list) -> np.ndarray:
        import torch

        with torch.no_grad():
            output = self.model(pixel_values=fixed_size_batch(images, self.image_size, "bicubic").to(self.model.device))
        return output.pooler_output.float().cpu().numpy()


class InceptionFeatures(FeatureExtractor):
    """FID features: Inception-v3's 2048 pool features, each image resized to 299 x 299 (bilinear, no crop) with
    ImageNet normalization, from **torchvision's** ImageNet weights (`IMAGENET1K_V1`). The values match FIDs computed
    with those weights (e.g. torchvision-based FID code), not the TensorFlow-ported weights of the original FID,
    pytorch-fid, clean-fid or torch-fidelity, whose numbers are the ones usually published; they differ by a few
    percent. Needs torchvision (optional)."""

    image_size = 299

    def __init__(self, device: str | None = None, batch_size: int = 32, pretrained: bool = True):
        try:
            from torchvision.models import Inception_V3_Weights, inception_v3
        except ImportError:
            raise SkinsynthError("`--features inception-v3` needs torchvision (the build matching your torch: README.md, Optional: torchvision and timm)") from None
        from torch import nn

        self.name = "inception-v3-torchvision" + ("" if pretrained else "-random")
        self.batch_size = batch_size
        weights = Inception_V3_Weights.IMAGENET1K_V1 if pretrained else None
        model = inception_v3(weights=weights, aux_logits=pretrained, init_weights=not pretrained, transform_input=pretrained)
        model.fc = nn.Identity()
        self.model = model.to(torch_device(device)).eval()

    def embed(self, images: list) -> np.ndarray:
        import torch

        with torch.no_grad():
            features = self.model(fixed_size_batch(images, self.image_size, "bilinear").to(next(self.model.parameters()).device))
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
    real training images (invariance to crops, flips, any rotation, colour jitter and JPEG), not what a lesion is."""

    image_size: int = 64
    width: int = 32
    embed_dim: int = 128
    steps: int = 800
    batch_size: int = 128
    learning_rate: float = 2e-3
    temperature: float = 0.1
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


def _jpeg_array(array: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def augment_batch(pixels: np.ndarray, size: int, rng: np.random.Generator):
    """Positive views of a batch of uint8 images (N, S, S, 3), as a float tensor (N, 3, size, size) in [-1, 1].

    The alterations of `copies.plant_copy(strength="heavy")`, a little wider and batched in torch: one affine map
    per image (crop keeping 60-95 % of each side, up to 15 % anisotropic scale, a flip, any rotation; reflection
    fills the corners), brightness / contrast / saturation in 0.75-1.25, a hue rotation of up to ±0.04 turn, then
    JPEG re-encoding at quality 30-90 for half of the views."""
    import torch
    import torch.nn.functional as F

    n = len(pixels)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0
    angle = torch.from_numpy(rng.uniform(0, 2 * np.pi, n)).float()
    keep = torch.from_numpy(rng.uniform(0.6, 0.95, n)).float()
    aspect = torch.from_numpy(rng.uniform(0.87, 1.15, n)).float()
    flip = torch.from_numpy(np.where(rng.random(n) < 0.5, -1.0, 1.0)).float()
    shift = torch.from_numpy(rng.uniform(-1, 1, (n, 2))).float() * (1 - keep)[:, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = keep * aspect.sqrt() * flip, keep / aspect.sqrt()
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, shift[:, 0]], 1), torch.stack([sin * sx, cos * sy, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def jitter():
        return torch.from_numpy(rng.uniform(0.75, 1.25, (n, 1, 1, 1))).float()

    x = x * jitter()
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).clamp(0, 1)
    x = gray.mean((2, 3), keepdim=True) + (x - gray.mean((2, 3), keepdim=True)) * jitter()
    x = gray + (x - gray) * jitter()
    x = _hue_rotate(x.clamp(0, 1), torch.from_numpy(rng.uniform(-0.04, 0.04, n)).float() * 2 * np.pi)
    out = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for i in np.flatnonzero(rng.random(n) < 0.5):
        out[i] = _jpeg_array(out[i], int(rng.integers(30, 91)))
    return _to_tensor(list(out))


def _hue_rotate(x, angle):
    """Rotate the chroma of RGB images (N, 3, H, W) by `angle` radians in YIQ space (a hue shift)."""
    import torch

    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    i, q = yiq[:, 1] * cos - yiq[:, 2] * sin, yiq[:, 1] * sin + yiq[:, 2] * cos
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), torch.stack([yiq[:, 0], i, q], 1))


def dihedral(batch, rng: np.random.Generator):
    """Each image of a (N, C, H, W) tensor flipped and rotated by a random multiple of 90°."""
    import torch

    views = [torch.rot90(image.flip(2) if rng.random() < 0.5 else image, int(rng.integers(4)), dims=(1, 2)) for image in batch]
    return torch.stack(views)


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
    """Fit the encoder on (at most `max_images` of) the real training images; seeded, so a rerun gives the same weights.

    Each step pairs a batch of training images (as the audit sees them, flipped or rotated by 90°) with altered copies
    of the same images (`augment_batch`, decoded from a 1.5x larger resize so crops keep their detail): NT-Xent pulls
    every copy towards its source and away from the other images of the batch."""
    import torch
    from tqdm.auto import tqdm

    if len(train_split) < 2:
        raise SkinsynthError(f"the `contrastive` features need at least 2 real training images, got {len(train_split)}")
    rng = np.random.default_rng(config.seed)
    indices = np.sort(rng.permutation(len(train_split))[: config.max_images])
    subset = train_split.select(indices.tolist())
    large = config.image_size * 3 // 2
    sources = np.stack([_resize(image, large) for batch in image_batches(subset, 256) for image in batch])
    clean = _to_tensor([_resize(_pil(a), config.image_size) for a in sources])
    torch.manual_seed(config.seed)
    model = _encoder(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.steps, pct_start=0.1)
    batch_size = min(config.batch_size, len(sources))
    model.train()
    with tqdm(range(config.steps), desc="training contrastive encoder", unit="step", disable=not progress) as bar:
        for _ in bar:
            chosen = rng.choice(len(sources), size=batch_size, replace=False)
            views = [dihedral(clean[chosen], rng).to(device), augment_batch(sources[chosen], config.image_size, rng).to(device)]
            z1, z2 = (model["head"](model["backbone"](v)) for v in views)
            loss = nt_xent(z1, z2, config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval(), float(loss.item())


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array)


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
    """The extractor named by `spec`: "auto", "contrastive", "dinov2-vitl14[:DIR]" (FD-DINOv2), "inception-v3" (FID,
    torchvision weights), "classifier:DIR", or a Hub id / model folder.

    `contrastive` is trained on `train_split` (the real training images) and cached in `cache_dir`.
    """
    if spec == "auto":
        spec = default_features()
    if spec == "contrastive":
        if train_split is None or cache_dir is None:
            raise SkinsynthError("the `contrastive` features need the real training split and a folder to cache the encoder in")
        return ContrastiveFeatures.fit_or_load(train_split, cache_dir, contrastive, device, progress)
    if spec == "dinov2-vitl14" or spec.startswith("dinov2-vitl14:"):
        return Dinov2Features(spec.partition(":")[2] or DINOV2_VITL14, device)
    if spec == "inception-v3":
        return InceptionFeatures(device)
    if spec.startswith("classifier:"):
        path = spec.removeprefix("classifier:")
        if not path:
            raise SkinsynthError("`--features classifier:DIR` needs the folder of an image classifier after the colon")
        return ClassifierFeatures(path, device)
    if not spec:
        raise SkinsynthError("`--features` is empty: give a Hub id, a model folder, `classifier:DIR` or `contrastive`")
    return HubFeatures(spec, device)
