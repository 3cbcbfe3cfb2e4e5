"""`contrastive`: a small CNN that skinsynth trains on the real training split itself (SimCLR's NT-Xent loss), so
that an audit works with no download; cached beside the audit's output and reused while the images and the config
are the same."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...errors import SkinsynthError
from .base import FeatureExtractor, image_batches, torch_device

logger = logging.getLogger(__name__)

CONTRASTIVE_DIR = "contrastive-encoder"


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

        from ...shards import atomic_write_json

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
