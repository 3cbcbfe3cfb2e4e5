"""Draw "toy lesions": three classes that differ by shape and texture only, never by colour.

    python dataset_scripts/toy_shapes.py OUT [--per-class 200] [--size 32] [--seed 0]

writes OUT/CLASS/NNNN.png (the `--format imagefolder` layout: `skinsynth prepare OUT --format imagefolder --out DIR`).
Every image is a skin-coloured, noisy background with a dark lesion of the same area, at a random place:

- `nodule`: a filled disc;
- `ring`: an annulus (a dark rim around a skin-coloured centre);
- `speckles`: a cluster of small dots (a texture).

Each image's mean colour is then shifted to the same value, so a model (or a classifier) that only learns colour
finds the class at chance: what tells the classes apart is what a generator must learn to draw. The demo trains a
model from scratch on them in minutes; the tests check it draws the prompted class. No patient images involved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("nodule", "ring", "speckles")
SKIN = np.array([222.0, 178.0, 158.0])
LESION = np.array([110.0, 62.0, 58.0])
MEAN = SKIN * 0.88 + LESION * 0.12  # every image's mean colour after drawing (the lesion covers about 12 %)


def lesion_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Where the lesion is dark: a boolean (size, size) array covering about the same area for every kind."""
    area = 0.12 * size * size
    y, x = np.mgrid[:size, :size] + 0.5
    if kind == "speckles":
        radius = 0.055 * size
        count = int(round(area / (np.pi * radius**2)))
        spread = 0.28 * size
        cy, cx = rng.uniform(spread + radius, size - spread - radius, 2)
        mask = np.zeros((size, size), bool)
        for dy, dx in rng.uniform(-spread, spread, (count, 2)):
            mask |= (y - cy - dy) ** 2 + (x - cx - dx) ** 2 < radius**2
        return mask
    if kind == "nodule":
        outer, inner = np.sqrt(area / np.pi), 0.0
    elif kind == "ring":
        outer = 0.25 * size
        inner = np.sqrt(outer**2 - area / np.pi)
    else:
        raise ValueError(f"unknown toy class {kind!r}; choose one of {CLASSES}")
    cy, cx = rng.uniform(outer + 1, size - outer - 1, 2)
    distance = np.hypot(y - cy, x - cx)
    return (distance < outer) & (distance >= inner)


def toy_image(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    mask = lesion_mask(kind, size, rng)
    pixels = np.where(mask[..., None], LESION, SKIN) + rng.normal(0, 8, (size, size, 3))
    pixels += MEAN - pixels.mean(axis=(0, 1))  # the same mean colour in every image
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))


def write_toy_shapes(out: str | Path, per_class: int = 200, size: int = 32, seed: int = 0) -> Path:
    """OUT/CLASS/NNNN.png for every class, `per_class` images each; the same seed draws the same images."""
    out = Path(out)
    for label, kind in enumerate(CLASSES):
        rng = np.random.default_rng([seed, label])
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            toy_image(kind, size, rng).save(folder / f"{i:04d}.png")
    return out


def shape_features(images) -> np.ndarray:
    """Translation-invariant shape features of RGB images (the log-magnitude of the grey image's 2-D Fourier
    transform, without its DC term): what a judge of the toy classes should look at, mean colour excluded."""
    grey = np.stack([np.asarray(image.convert("L"), np.float32) for image in images])
    spectrum = np.log1p(np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))))
    return spectrum.reshape(len(grey), -1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_toy_shapes(args.out, args.per_class, args.size, args.seed)
    print(f"wrote {args.per_class} images of each of {', '.join(CLASSES)} into {args.out}")
