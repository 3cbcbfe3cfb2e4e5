"""Does data loading starve `skinsynth benchmark`'s training loop?

Trains the same classifier on the same images, every loop with the same number of torch threads (`--threads`,
default: torch's own default, what a bare loop gets without asking):

1. skinsynth's path: `ImageRows` (images decoded once into memory, augmented per step, in `--workers` DataLoader
   workers or in the training process with 0) feeding `train_and_predict` (accelerate, AdamW, cosine schedule),
   which measures how long each step waits for its batch;
2. a bare PyTorch loop over the same images decoded, augmented and normalized once, up front, into one in-memory
   float tensor: the throughput training would have if loading cost nothing;
3. (to tell the two costs apart) skinsynth's loop over those in-memory images.

Reports the stall (time waiting for batches / training time; goal < 10%) and the throughput ratio
(skinsynth images/s ÷ bare-loop images/s; goal >= 0.9).

    PYTHONPATH=. python benchmarks/bench_dataloading.py --real ./ham10000 --image-size 64 --images 2048 --epochs 2

`--real` is a real dataset folder (`skinsynth prepare` output). Without `--model`, a small ResNet config
(from scratch, the README's real run model) is used.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from skinsynth.benchmark.experiment import default_workers
from skinsynth.benchmark.classifier import load_classifier, normalization
from skinsynth.benchmark.train import ImageRows, TrainConfig, make_accelerator, normalize, train_and_predict
from skinsynth.data import label_names, open_dataset


def small_resnet(folder: str) -> str:
    from transformers import ResNetConfig

    ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic").save_pretrained(folder)
    return folder


class Decoded(torch.utils.data.Dataset):
    """The training images decoded and augmented once (epoch 0), held in memory as one uint8 tensor."""

    def __init__(self, train_set: ImageRows):
        self.pixels = torch.stack([train_set[(0, i)][0] for i in range(len(train_set))])
        self.labels, self.norm = train_set.labels, train_set.norm

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key):
        index = key[1] if isinstance(key, tuple) else key  # training keys are (epoch, index)
        return self.pixels[index], int(self.labels[index])


def bare_loop(model_factory, decoded: Decoded, config: TrainConfig, seed: int) -> float:
    """Images per second of a plain PyTorch training loop over pre-decoded, pre-augmented tensors."""
    from transformers import get_cosine_schedule_with_warmup

    pixels, labels = normalize(decoded.pixels, decoded.norm), torch.as_tensor(decoded.labels)  # float, ready for the model
    torch.manual_seed(seed)
    model = model_factory()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(decoded) // config.batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * config.epochs * steps_per_epoch), config.epochs * steps_per_epoch)
    model.train()
    start = time.perf_counter()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(decoded)).split(config.batch_size):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=pixels[batch]).logits, labels[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    return config.epochs * len(decoded) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", required=True, help="real dataset folder with train/validation/test splits")
    parser.add_argument("--model", default=None, help="classifier (default: a small ResNet from scratch)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048, help="training images (the first N of the train split)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="measure each loop this many times, interleaved; report the best")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of skinsynth's loop (default: the benchmark's default)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of every loop (default: torch's default here)")
    args = parser.parse_args()
    workers = default_workers("cpu") if args.workers is None else args.workers
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # make_accelerator then leaves the thread count alone
    torch.set_num_threads(args.threads)

    data = open_dataset(args.real, required_splits=("train", "validation"))
    classes = label_names(data)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or small_resnet(tmp)
        norm = normalization(model)
        train = data["train"]
        rows = np.arange(min(args.images, len(train)))
        started = time.perf_counter()
        train_set = ImageRows([(train, rows, np.asarray(train["label"])[rows])], args.image_size, norm, train=True, seed=0)
        decode_seconds = time.perf_counter() - started
        few = np.arange(min(64, len(data["validation"])))
        held_out = ImageRows([(data["validation"], few, np.asarray(data["validation"]["label"])[few])], args.image_size, norm, train=False)
        config = TrainConfig(image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, workers=workers)
        factory = lambda: load_classifier(model, classes)  # noqa: E731

        accelerator = make_accelerator("cpu", workers)
        decoded = Decoded(train_set)
        measured = {"skinsynth": [], "same loop, decoded": [], "bare": []}
        for _ in range(args.repeats):  # interleaved, best of each: load from other processes only ever slows a run down
            measured["bare"].append(bare_loop(factory, decoded, config, seed=0))
            result = train_and_predict(factory, train_set, held_out, held_out, config, seed=0, accelerator=accelerator, progress=False)
            measured["skinsynth"].append((result.images_per_second, result.data_wait_share))
            same_loop = train_and_predict(factory, decoded, held_out, held_out, replace(config, workers=0), seed=0, accelerator=accelerator, progress=False)
            measured["same loop, decoded"].append(same_loop.images_per_second)
    speed, stall = max(measured["skinsynth"])
    same, bare = max(measured["same loop, decoded"]), max(measured["bare"])
    print(f"{len(rows)} images at {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs, {workers} workers, {torch.get_num_threads()} torch threads in every loop, {os.cpu_count()} CPUs")
    print(f"decoding the training images once, up front: {decode_seconds:.1f} s")
    print(f"skinsynth loop: {speed:.1f} images/s, data-loading stall {100 * stall:.1f}% of step time (goal < 10%)")
    print(f"skinsynth loop on pre-decoded tensors: {same:.1f} images/s (the loop's own cost, without decoding)")
    print(f"bare loop:      {bare:.1f} images/s (pre-decoded tensors in memory)")
    print(f"throughput ratio: {speed / bare:.2f} (goal >= 0.9); without decoding: {same / bare:.2f}")


if __name__ == "__main__":
    main()
