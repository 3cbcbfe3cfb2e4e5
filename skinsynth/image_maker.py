"""Turning a batch of planned images into accepted pixels: call the pipeline with each image's own seed, reject
what must not be kept (blank, non-finite, flagged, filtered out), and remake each rejected image with its next seed,
counting per cell, until every image is accepted or a cell would come up short."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .errors import ShortfallError
from .families import Family
from .images import rejection_reason, to_uint8
from .plan import ImageJob, attempt_seed
from .recipe import Recipe


class ImageMaker:
    """Turns batches of jobs into accepted uint8 images, retrying rejected images with their next seed.

    An `image_filter` (`skinsynth.audit.filter.ImageFilter`) reviews the images that pass the degenerate-image
    checks; its rejections are retried the same way, and its scores become `score_columns` of the rows. An image
    still rejected after `max_attempts` tries stops the run (`ShortfallError`) rather than leaving its class and
    attribute cell short; the message names the cell, its acceptance rate in this run and what would help.
    """

    def __init__(self, pipe, recipe: Recipe, image_filter=None, family: Family | None = None):
        self.pipe = pipe
        self.recipe = recipe
        self.family = family or Family()  # maps the recipe's settings onto the pipeline's keywords
        self.image_filter = image_filter
        self.score_columns: tuple[str, ...] = image_filter.score_columns if image_filter is not None else ()
        self.tried: Counter = Counter()  # per cell (split, label, attributes): images made in this run
        self.accepted: Counter = Counter()

    @staticmethod
    def cell(job: ImageJob) -> tuple:
        return (job.split, job.label, tuple(sorted(job.attributes.items())))

    def __call__(self, jobs: list[ImageJob], rejections: Counter, per_class: Counter | None = None) -> list[tuple[ImageJob, int, np.ndarray, dict]]:
        """(job, seed used, pixels, scores) for every job, each accepted within `max_attempts` tries; rejections are
        counted by reason, and in `per_class` by (reason, class name)."""
        import torch
        from PIL import Image

        accepted: dict[int, tuple[ImageJob, int, np.ndarray, dict]] = {}
        pending = [(job, 0) for job in jobs]
        while pending:
            seeds = [attempt_seed(job.seed, attempt) for job, attempt in pending]
            arguments = self.family.call_arguments(
                [job.prompt for job, _ in pending], [job.negative_prompt for job, _ in pending], pending[0][0].guidance_scale, pending[0][0].num_inference_steps, self.recipe,
            )
            output = self.pipe(**arguments, generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds], output_type="np")
            flags = getattr(output, "nsfw_content_detected", None) or [None] * len(pending)
            reasons = [rejection_reason(image, flag) for image, flag in zip(output.images, flags)]
            pixels = [to_uint8(image) for image in output.images]
            scores = [{}] * len(pending)
            if self.image_filter is not None:
                images = [Image.fromarray(p) if r is None else None for p, r in zip(pixels, reasons)]
                reasons, scores = self.image_filter.review(images, [job.label for job, _ in pending], reasons)
            retry, exhausted = [], []
            for (job, attempt), seed, image, reason, score in zip(pending, seeds, pixels, reasons, scores):
                self.tried[self.cell(job)] += 1
                if reason is None:
                    self.accepted[self.cell(job)] += 1
                    accepted[job.index] = (job, seed, image, score)
                    continue
                rejections[reason] += 1
                if per_class is not None:
                    per_class[reason, self.recipe.label_names[job.label]] += 1
                if attempt + 1 < self.recipe.generation.max_attempts:
                    retry.append((job, attempt + 1))
                else:
                    exhausted.append((job, reason))
            if exhausted:
                raise ShortfallError(self.shortfall(*exhausted[0]))
            pending = retry
        return [accepted[job.index] for job in jobs]

    def shortfall(self, job: ImageJob, reason: str) -> str:
        """What stops the run: which cell, how often its images pass in this run, and which settings would help."""
        from .audit.copy_filter import COPY

        cell = self.cell(job)
        tried, kept = self.tried[cell], self.accepted[cell]
        rate = kept / tried if tried else 0.0
        attempts = self.recipe.generation.max_attempts
        where = " ".join([f"split `{job.split}`, class `{self.recipe.label_names[job.label]}`"] + [f"{k}={v}" for k, v in sorted(job.attributes.items())])
        if 0 < rate < 1:  # tries that make a shortfall unlikely (< 0.1% per image) at this rate
            needed = min(100, math.ceil(math.log(1e-3) / math.log(1 - rate)))
            fix = f"raise `generation.max_attempts` in the recipe{f' to about {needed} (at most 100)' if needed > attempts else ''} and run the same command again to resume, or "
        else:
            fix = "raising `generation.max_attempts` will not help at this rate: "
        if reason == COPY:
            fix = "the model reproduces its training images for this cell: train it less or on more images per class, or "
        elif self.image_filter is not None:
            fix += "lower `--filter-threshold` / drop `--filter-upper` or `--filter-clip` (a new --out), or "
        return (
            f"image {job.index} of {where} was rejected {attempts} times (last: {reason}); this cell kept {kept} of {tried} images in this run "
            f"({100 * rate:.1f}%), so it would come up short. Finished shards are kept; {fix}use a model that draws this class better"
        )
