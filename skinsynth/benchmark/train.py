"""Train one image classifier on one arm and predict the real test set.

Images are decoded and augmented inside the Dataset's `__getitem__`, so DataLoader workers do it beside the
training step; augmentations are seeded by (seed, epoch, index), so a run repeats exactly whatever the number of
workers. Training is AdamW with a cosine schedule and early stopping on real validation accuracy, keeping the best
weights; accelerate provides mixed precision on GPU and several GPUs under `accelerate launch`. The classifier
itself (which models qualify, their weights and input statistics) is `classifier`'s.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..data import stored_images
from .classifier import Normalization


@dataclass(frozen=True)
class TrainConfig:
    image_size: int
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 0.05
    warmup_ratio: float = 0.05
    patience: int = 10
    workers: int = 0
    select_by: str = "balanced_accuracy"  # validation metric early stopping keeps the best epoch by (metrics.SELECT_BY)
    class_weighted: bool = False  # cross-entropy weighted by inverse class frequency of the training set


# ---- data -------------------------------------------------------------------------------------------------------


def center_square(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square, resized to `size` (evaluation: skin lesions are photographed centred)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def random_resized_crop(image: Image.Image, size: int, rng: np.random.Generator, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """A crop of 60-100% of the area at an aspect ratio from 3:4 to 4:3, resized to `size` (as torchvision's)."""
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return image.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    return center_square(image, size)


ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L" conversion


def color_jitter(pixels: np.ndarray, rng: np.random.Generator, strength: float = 0.1) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength] (PIL's
    ImageEnhance formulas, on an HxWx3 float array in [0, 1], in one vectorized pass)."""
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3).astype(np.float32)
    pixels = np.clip(pixels * brightness, 0.0, 1.0)
    mean = (pixels @ LUMA).mean()
    pixels = np.clip(mean + contrast * (pixels - mean), 0.0, 1.0)
    gray = (pixels @ LUMA)[..., None]
    return np.clip(gray + saturation * (pixels - gray), 0.0, 1.0)


def to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


def augment(image: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """Augmentations that keep a skin lesion's meaning: any orientation (flips, 90° turns), a random resized crop,
    and a small brightness/contrast/saturation jitter (±10%). No hue shift: colour carries the diagnosis."""
    image = random_resized_crop(image, size, rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    rotation = ROTATIONS[int(rng.integers(0, 4))]
    if rotation is not None:
        image = image.transpose(rotation)
    return color_jitter(to_array(image), rng)


CACHE_LIMIT = 4 << 30  # bytes of decoded pixels an `ImageRows` keeps in memory at most; beyond, it decodes per access


def decode(stored, size: int) -> Image.Image:
    """An RGB image from its stored bytes (or path), at most about twice `size` on its short side: JPEGs decode at a
    reduced scale (`draft`), larger images are then shrunk; augmentation never needs more than that."""
    image = Image.open(io.BytesIO(stored) if isinstance(stored, bytes) else stored)
    image.draft("RGB", (2 * size, 2 * size))
    image = image.convert("RGB")
    short = min(image.size)
    if short > 2 * size:
        image = image.resize((round(image.width * 2 * size / short), round(image.height * 2 * size / short)), Image.Resampling.BILINEAR)
    return image


class ImageRows(torch.utils.data.Dataset):
    """Rows of one or more datasets' splits as (uint8 pixel tensor, label); decoding and augmentation happen here.

    `parts` are (datasets.Dataset, row indices, label ids) triples: the label ids are already in the real
    dataset's label space. Every image is decoded once, up front and in threads, into memory: at most twice the
    input size for training (augmentations crop from it), the final centred square for evaluation; a set whose
    pixels would pass `cache_limit` bytes is decoded per access instead. Tensors stay uint8 until the training
    loop normalizes them on the device (`normalize`), a quarter of the bytes between DataLoader workers and the
    model. A training set is indexed by (epoch, index) keys from `EpochShuffle`: the augmentation of an image
    depends on the seed, the epoch and its index only, so it is the same with any number of workers, and
    workers can stay alive across epochs.
    """

    def __init__(self, parts, size: int, norm: Normalization, train: bool, seed: int = 0, cache_limit: int = CACHE_LIMIT):
        self.items = np.concatenate([np.stack([np.full(len(rows), i), rows, labels], axis=1) for i, (_, rows, labels) in enumerate(parts)]).astype(np.int64)
        self.size, self.train, self.seed, self.norm = size, train, seed, norm
        self.stored = [item for ds, rows, _ in parts for item in stored_images(ds, rows)]
        self.cache: list[np.ndarray] | None = None
        side = 2 * size if train else size
        if len(self.items) * side * side * 3 * (4 / 3 if train else 1) <= cache_limit:  # HAM10000's 4:3 images at most
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
                self.cache = list(pool.map(self._decode, range(len(self.items)), chunksize=64))
            self.stored = None

    def _decode(self, index: int) -> np.ndarray:
        image = decode(self.stored[index], self.size)
        return np.asarray(image if self.train else center_square(image, self.size))

    @property
    def labels(self) -> np.ndarray:
        return self.items[:, 2]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        pixels = self.cache[index] if self.cache is not None else self._decode(index)
        if self.train:
            jittered = augment(Image.fromarray(pixels), self.size, np.random.default_rng([self.seed, epoch, index]))
            pixels = (jittered * 255.0 + 0.5).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), int(self.items[index, 2])


def normalize(pixels: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 NCHW pixels -> the float inputs the model expects, on the pixels' device."""
    mean = torch.tensor(norm.mean, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


# ---- training ---------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one training run leaves: the test-set scores and how training went."""

    test_scores: np.ndarray
    test_labels: np.ndarray
    epochs_run: int
    best_epoch: int
    best_val_top1: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    data_wait_share: float = 0.0  # share of the training steps' time spent waiting for the next batch
    images_per_second: float = 0.0  # training throughput, data loading included
    best_val: dict = field(default_factory=dict)  # the chosen epoch's validation metrics (top1, balanced_accuracy, loss)
    external_scores: dict[str, np.ndarray] = field(default_factory=dict)  # scores on each external test set
    model: object = None  # the trained model with the chosen epoch's weights (not saved in runs/; None once reloaded)


def make_accelerator(device: str | None, workers: int = 0):
    """One `Accelerator` for the whole benchmark: bf16 (or fp16) autocast on CUDA, full precision elsewhere.

    On CPU the cores are shared out: the DataLoader workers get one each and torch's threads the rest (unless
    OMP_NUM_THREADS says otherwise), because threads competing with the workers for cores slow every step.
    """
    from accelerate import Accelerator

    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    if cpu and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - workers)))
    if device is not None and device.startswith("cuda:"):
        torch.cuda.set_device(device)
    precision = "no" if cpu or not torch.cuda.is_available() else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    return Accelerator(cpu=cpu, mixed_precision=precision)


class EpochShuffle(torch.utils.data.Sampler):
    """A new order of the training set every epoch, from (seed, epoch) alone, yielding (epoch, index) keys.

    The same on every process under accelerate (which shards the batches); `set_epoch` is called by the
    training loop (and by accelerate's data loader wrapper, with the same value).
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        return iter([(self.epoch, int(i)) for i in order])


def loader(dataset, batch_size: int, workers: int, sampler=None, keep_workers: bool = False):
    """A DataLoader over the rows (decoded once up front unless they are too many), which augments; `keep_workers` keeps them alive from one epoch to the next."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=keep_workers and workers > 0,
        pin_memory=torch.cuda.is_available(), drop_last=False,
    )


@torch.no_grad()
def predict(model, data, accelerator, norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    scores, labels = [], []
    for pixels, target in data:
        logits = model(pixel_values=normalize(pixels, norm)).logits
        logits, target = accelerator.gather_for_metrics((logits.float(), target))
        scores.append(logits.cpu().numpy())
        labels.append(target.cpu().numpy())
    return np.concatenate(scores), np.concatenate(labels)


def validation_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """What early stopping can select by: top-1, balanced accuracy and the (unweighted) cross-entropy."""
    from .metrics import balanced_accuracy, confusion_matrix

    loss = torch.nn.functional.cross_entropy(torch.from_numpy(scores).float(), torch.from_numpy(labels).long()).item()
    return {"top1": float((scores.argmax(axis=1) == labels).mean()),
            "balanced_accuracy": float(balanced_accuracy(confusion_matrix(labels, scores.argmax(axis=1), scores.shape[1]))), "loss": float(loss)}


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the training images: n / (classes present * count of the class)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = (counts > 0).sum()
    return torch.tensor(np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 0.0), dtype=torch.float32)


def train_and_predict(model_factory, train_set: ImageRows, val_set: ImageRows, test_set: ImageRows, config: TrainConfig, seed: int, accelerator,
                      progress_desc: str = "", progress: bool = True, external: dict[str, ImageRows] | None = None) -> RunResult:
    """Train a fresh model from `model_factory()` on `train_set`, stop early on the validation metric
    `config.select_by`, and score the test set (and each `external` test set) with the chosen epoch's weights
    (kept in `RunResult.model`)."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    start = time.perf_counter()
    set_seed(seed)
    model = model_factory()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    shuffle = EpochShuffle(len(train_set), seed)
    train_data = loader(train_set, config.batch_size, config.workers, sampler=shuffle, keep_workers=True)
    val_data = loader(val_set, config.batch_size, config.workers, keep_workers=True)
    test_data = loader(test_set, config.batch_size, config.workers)
    model, optimizer, train_data, val_data, test_data = accelerator.prepare(model, optimizer, train_data, val_data, test_data)
    total_steps = config.epochs * len(train_data) * accelerator.num_processes
    scheduler = accelerator.prepare(get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps))

    norm = train_set.norm
    num_classes = accelerator.unwrap_model(model).config.num_labels
    weight = class_weights(train_set.labels, num_classes).to(accelerator.device) if config.class_weighted else None
    sign = -1.0 if config.select_by == "loss" else 1.0  # selection maximizes sign * metric
    best_state, best_score, best_val, best_epoch, history = None, -math.inf, {}, -1, []
    waited = stepped = 0.0
    trained = 0
    bar = tqdm(total=config.epochs, desc=progress_desc, unit="epoch", disable=not (progress and accelerator.is_main_process), leave=True)
    for epoch in range(config.epochs):
        shuffle.set_epoch(epoch)
        model.train()
        loss_sum, seen = torch.zeros((), device=accelerator.device), 0  # summed on the device: no sync per step
        tick = time.perf_counter()
        for pixels, target in train_data:
            ready = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(pixel_values=normalize(pixels, norm)).logits.float(), target, weight=weight)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * len(target)
            seen += len(target)
            done = time.perf_counter()
            waited, stepped, tick = waited + ready - tick, stepped + done - tick, done
        trained += seen
        scores, labels = predict(model, val_data, accelerator, norm)
        val = validation_metrics(scores, labels)
        history.append({"epoch": epoch + 1, "loss": loss_sum.item() / max(seen, 1), **{f"val_{k}": v for k, v in val.items()}})
        if sign * val[config.select_by] > best_score:
            best_score, best_val, best_epoch = sign * val[config.select_by], val, epoch + 1
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in accelerator.unwrap_model(model).state_dict().items()}
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val[config.select_by]:.3f}", best=f"{sign * best_score:.3f}@{best_epoch}")
        bar.update()
        if epoch + 1 - best_epoch >= config.patience:
            break
    bar.close()
    trained_model = accelerator.unwrap_model(model)
    trained_model.load_state_dict(best_state)
    test_scores, test_labels = predict(model, test_data, accelerator, norm)
    external_scores = {}
    for name, dataset in (external or {}).items():
        external_scores[name] = predict(model, accelerator.prepare(loader(dataset, config.batch_size, config.workers)), accelerator, norm)[0]
    accelerator.free_memory(model, optimizer, scheduler, train_data, val_data, test_data)
    return RunResult(test_scores, test_labels, len(history), best_epoch, best_val["top1"], history, time.perf_counter() - start,
                     waited / stepped if stepped else 0.0, trained / stepped if stepped else 0.0, best_val, external_scores, trained_model.to("cpu"))
