"""Training batches: a fixed, resumable order of rows, and the pixels and token ids of each row.

Batch `m` (a micro-step: one forward/backward) is a pure function of (seed, m, process): epoch `e` visits the
rows in a permutation seeded by (seed, e) (or, with class balancing, draws as many rows with replacement, rare
classes more often), and the global batch is split between processes. A run resumed at
step `s` therefore starts at exactly the batch an uninterrupted run would have seen next, with the same random
flips and captions (both seeded by (seed, epoch, row)), without replaying the batches before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .captions import Captioner


@dataclass(frozen=True)
class BatchOrder:
    """Which rows (with their epoch) each process trains on at each micro-step; the last partial batch of an
    epoch is dropped so that every batch has the same size."""

    num_rows: int
    batch_size: int
    num_processes: int = 1
    seed: int = 0
    row_weights: np.ndarray | None = field(default=None, compare=False)  # sampling probabilities; None: each row once

    @classmethod
    def balanced(cls, labels, batch_size: int, num_processes: int = 1, seed: int = 0, balance: float = 0.0) -> BatchOrder:
        """Rows drawn with probability proportional to count(class) ** -balance: 0 keeps the data's class
        frequencies (each row once an epoch), 1 shows every class equally often."""
        labels = np.asarray(labels)
        if not balance:
            return cls(len(labels), batch_size, num_processes, seed)
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = counts[inverse].astype(np.float64) ** -balance
        return cls(len(labels), batch_size, num_processes, seed, weights / weights.sum())

    @property
    def batches_per_epoch(self) -> int:
        return self.num_rows // (self.batch_size * self.num_processes)

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.row_weights is None:
            return rng.permutation(self.num_rows)
        return rng.choice(self.num_rows, size=self.num_rows, replace=True, p=self.row_weights)

    def batch(self, micro_step: int, process_index: int = 0) -> list[tuple[int, int]]:
        """(row, epoch) pairs of this process's share of the batch at `micro_step`."""
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        start = (position * self.num_processes + process_index) * self.batch_size
        return [(int(row), epoch) for row in self.epoch_order(epoch)[start : start + self.batch_size]]


class BatchSampler(torch.utils.data.Sampler):
    """Micro-steps `start` to `stop` of a `BatchOrder`, for a `DataLoader(batch_sampler=...)`."""

    def __init__(self, order: BatchOrder, start: int, stop: int, process_index: int = 0):
        self.order, self.start, self.stop, self.process_index = order, start, stop, process_index

    def __iter__(self):
        for micro_step in range(self.start, self.stop):
            yield self.order.batch(micro_step, self.process_index)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


def training_pixels(image: Image.Image, resolution: int, flip: bool) -> np.ndarray:
    """RGB image -> float32 (3, resolution, resolution) in [-1, 1]: shorter side resized to `resolution`
    (Lanczos), center-cropped, optionally mirrored left-right."""
    image = image.convert("RGB")
    scale = resolution / min(image.size)
    width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    left, top = (width - resolution) // 2, (height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return pixels.transpose(2, 0, 1)


class TrainingRows(torch.utils.data.Dataset):
    """A dataset split seen through its captions: item `(row, epoch)` -> pixels, token ids and caption."""

    def __init__(self, dataset, captioner: Captioner, tokenizer, resolution: int, seed: int = 0, flip: bool = True):
        self.dataset = dataset.select_columns(["image", "label", *captioner.columns])
        self.captioner, self.tokenizer, self.resolution, self.seed, self.flip = captioner, tokenizer, resolution, seed, flip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        row_index, epoch = key
        row = self.dataset[row_index]
        caption = self.captioner(row, row_index, epoch)
        flip = self.flip and np.random.default_rng([self.seed, epoch, row_index, 1]).random() < 0.5
        input_ids = self.tokenizer(caption, max_length=self.tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt").input_ids[0]
        pixels = torch.from_numpy(training_pixels(row["image"], self.resolution, flip))
        return {"pixel_values": pixels, "input_ids": input_ids, "caption": caption, "image_key": (row_index, bool(flip))}


def collate(items: list[dict]) -> dict:
    batch = {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "input_ids": torch.stack([item["input_ids"] for item in items]),
        "captions": [item["caption"] for item in items],
        "image_keys": [item["image_key"] for item in items],  # (row, mirrored): what `--cache-latents` keeps latents by
    }
    if "prior" in items[0]:  # DreamBooth's class images (`prior.WithPrior`), a batch of their own
        batch["prior"] = collate([item["prior"] for item in items])
    return batch
