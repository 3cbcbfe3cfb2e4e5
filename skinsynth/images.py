"""Checks and conversions of decoded images, shared by generation and the post-hoc filter so that both treat an
image the same way."""

from __future__ import annotations

import io

import numpy as np


def rejection_reason(image: np.ndarray, nsfw_flag: bool | None) -> str | None:
    """Why a decoded image must not be kept: the safety checker blanked it, or it is not a real image."""
    if nsfw_flag:
        return "safety_checker"
    if not np.isfinite(image).all():
        return "non_finite"
    if float(image.max()) - float(image.min()) < 1e-3:
        return "constant"
    return None


def encode_image(pixels: np.ndarray, image_format: str, quality: int) -> bytes:
    """uint8 HxWx3 pixels -> file bytes in the recipe's format (kept as-is in the Arrow shard)."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {} if image_format == "png" else {"quality": quality}
    Image.fromarray(pixels).save(buffer, format=image_format.upper(), **options)
    return buffer.getvalue()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """diffusers' own float [0, 1] -> uint8 conversion (as in `numpy_to_pil`)."""
    return (np.nan_to_num(images) * 255).round().clip(0, 255).astype("uint8")
