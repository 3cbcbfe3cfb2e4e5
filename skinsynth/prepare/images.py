"""`prepare`'s image pass: check each image cheaply (a reduced decode that still reads the whole stream) and take
its duplicate fingerprint; convert only the images that must change (mode, format, size), keeping the rest's bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass

from .. import duplicates as dup
from ..sources import Example
from .config import PrepareConfig

KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
# Why an image in this mode is re-encoded (the reason is counted under "converted" in the manifest).
CONVERSIONS = {"L": "greyscale", "LA": "greyscale", "1": "greyscale", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "16-bit",
               "F": "16-bit", "CMYK": "cmyk", "RGBA": "alpha", "RGBa": "alpha", "PA": "alpha", "P": "palette", "YCbCr": "colour_space",
               "LAB": "colour_space", "HSV": "colour_space"}


def _rotated(image) -> bool:
    """Whether the EXIF orientation turns the image by 90 degrees (phone photos): its upright size is swapped."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


@dataclass(frozen=True)
class Check:
    """What pass one learnt about an image: why to skip it, or why (if at all) it must be re-encoded."""

    skip: str | None = None
    convert: str | None = None
    fingerprint: dup.Fingerprint | None = None


# The shorter side a JPEG is decoded at (at least) for its duplicate fingerprint: 8x the 32-pixel thumbnail the
# fingerprint is made of. A JPEG decodes at 1/2, 1/4 or 1/8 scale far faster than in full, and the fingerprint barely
# moves: on 370 HAM10000 images upscaled to 1600x1200 (with resized, re-encoded and PNG copies) the thumbnails differ
# from a full decode's by 0.55 grey levels at most (near copies: 2.5) and exactly the same pairs are found.
FINGERPRINT_SIDE = 8 * dup.THUMBNAIL


def check_image(example: Example, config: PrepareConfig) -> Check:
    """Open the example's image, read its header and decode it to prove it is whole, at reduced size: with `dedup`
    large enough for its fingerprint (`FINGERPRINT_SIDE`), else as small as possible (JPEG: 1/8 scale). A reduced
    decode still reads the whole compressed stream, so truncated files are caught."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        data = example.data()
    except FileNotFoundError:
        return Check(skip="missing_file")
    except OSError:
        return Check(skip="unreadable_file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode, fmt, size = image.mode, image.format, image.size[::-1] if _rotated(image) else image.size
            if config.dedup:
                image.draft(None, (FINGERPRINT_SIDE, FINGERPRINT_SIDE))
                image.load()
                fingerprint = dup.fingerprint(to_rgb(ImageOps.exif_transpose(image)))
            else:
                image.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
                fingerprint = None
    except UnidentifiedImageError:
        return Check(skip="not_an_image")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return Check(skip="corrupt_image")
    if fmt == "PNG" and len(data) > 24 and data[24] > 8:  # IHDR bit depth; Pillow opens 16-bit RGB PNGs as 8-bit RGB
        return Check(convert="16-bit", fingerprint=fingerprint)
    if mode != "RGB":
        return Check(convert=CONVERSIONS.get(mode, "colour_space"), fingerprint=fingerprint)
    if fmt not in KEPT_FORMATS:
        return Check(convert="format", fingerprint=fingerprint)
    if config.target_size(size) is not None:
        return Check(convert="resize", fingerprint=fingerprint)
    return Check(fingerprint=fingerprint)


def to_rgb(image):
    """An RGB copy of `image`: alpha composited on white, 16-bit and float scaled down (not clipped) to 8 bits."""
    import numpy as np
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" or pixels.max() > 1 else 1.0
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_bytes(example: Example, check: Check, config: PrepareConfig) -> tuple[bytes, str]:
    """The bytes to store and the file name to record: the original file when nothing must change, else an RGB
    (and, if asked, resized) re-encoding, JPEG for JPEG sources and PNG for the rest. A re-encoded image is turned
    upright first (the EXIF orientation is not carried over; `datasets` applies it when decoding kept bytes)."""
    from PIL import Image, ImageOps

    data, path = example.data(), example.path
    if check.convert is None:
        return data, path.name
    with Image.open(io.BytesIO(data)) as image:
        source_format, rotated = image.format, _rotated(image)
        size = config.target_size(image.size[::-1] if rotated else image.size)
        if size is not None and source_format == "JPEG":
            image.draft("RGB", size[::-1] if rotated else size)  # decode at the smallest DCT scale still >= `size`: much faster
        image = to_rgb(ImageOps.exif_transpose(image))
        if size is not None:
            image = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if source_format == "JPEG":
            image.save(out, format="JPEG", quality=config.quality)
            return out.getvalue(), f"{path.stem}.jpg"
        image.save(out, format="PNG")
        return out.getvalue(), f"{path.stem}.png"
