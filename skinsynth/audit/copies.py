"""Planted copies: real training images altered the way a generator that memorized them might alter them.

A memorization audit that nobody checked may miss real copies, so every audit measures its own recall on copies it
plants itself: training images cropped, flipped, rotated, colour-jittered and JPEG re-encoded. Two strengths:

- `light`: the issue's "demanding user" test: a 5 % crop, a flip or a 90° rotation, +15 % saturation, JPEG 70;
- `heavy` (the default in reports): a crop keeping 70-90 % of each side, a flip, a rotation by any angle (corners
  filled by reflection, then cropped back to the original aspect), brightness / contrast / saturation ±20 %, a hue
  shift of up to ±0.03 turn, and JPEG quality 40-75.

Pure functions of (image, seeded generator): the same seed plants the same copies.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

STRENGTHS = ("light", "heavy")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _crop(image: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    """A crop keeping `keep` of each side at a random position."""
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def _rotate_any(image: Image.Image, angle: float) -> Image.Image:
    """Rotation by `angle` degrees with no black corners: the image is reflect-padded, rotated, and cropped back."""
    w, h = image.size
    pad = max(w, h) // 2
    array = np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    rotated = Image.fromarray(array).rotate(angle, resample=Image.BICUBIC)
    return rotated.crop((pad, pad, pad + w, pad + h))


def _hue_shift(image: Image.Image, shift: float) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(shift * 255)) % 256
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


def plant_copy(image: Image.Image, rng: np.random.Generator, strength: str = "heavy") -> Image.Image:
    """One altered copy of `image` (RGB), as described in the module docstring."""
    if strength not in STRENGTHS:
        raise ValueError(f"unknown copy strength {strength!r}; use one of {STRENGTHS}")
    image = image.convert("RGB")
    if strength == "light":
        image = _crop(image, 0.95, rng)
        image = ImageOps.mirror(image) if rng.random() < 0.5 else image.rotate(90 * int(rng.integers(1, 4)), expand=True)
        return _jpeg(ImageEnhance.Color(image).enhance(1.15), 70)
    image = _crop(image, float(rng.uniform(0.7, 0.9)), rng)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = _rotate_any(image, float(rng.uniform(0, 360)))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(float(rng.uniform(0.8, 1.2)))
    image = _hue_shift(image, float(rng.uniform(-0.03, 0.03)))
    return _jpeg(image, int(rng.integers(40, 76)))
