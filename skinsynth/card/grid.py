"""`sample_grid.png`: one labeled row per class, the picture a card embeds so people can look before they load."""

from __future__ import annotations

import io
from pathlib import Path

from ..paths import inside as inside_root
from .summary import DataSummary, open_stream
from .templates import GRID_FILE


def sample_grid(root: Path, manifest: dict, summary: DataSummary, split: str, per_class: int = 4, tile: int = 128):
    """A PIL image with one labeled row per class: the first `per_class` images of that class in `split`.

    Only the chosen rows' image bytes are read and decoded.
    """
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    names = summary.label_names
    wanted: dict[int, list[int]] = {label: [] for label in range(len(names))}
    for index, label in enumerate(summary.columns[split]["label"]):
        if len(wanted[label]) < per_class:
            wanted[label].append(index)
    images: dict[int, Image.Image] = {}
    offset = 0
    needed = sorted(i for rows in wanted.values() for i in rows)
    for shard in manifest["splits"][split]["shards"]:
        inside = [i for i in needed if offset <= i < offset + shard["num_rows"]]
        if inside:
            column = open_stream(inside_root(root, shard["file"], "the manifest's shard list")).read_all().column("image")
            for i in inside:
                data = column[i - offset].as_py()["bytes"]
                images[i] = ImageOps.contain(Image.open(io.BytesIO(data)).convert("RGB"), (tile, tile), Image.Resampling.LANCZOS)
        offset += shard["num_rows"]

    font = ImageFont.load_default(size=15)
    pad = 6
    label_width = int(max(font.getlength(name) for name in names)) + 3 * pad
    title = f"{split} split: the first images of each class"
    top = 28
    columns = max(1, *(len(rows) for rows in wanted.values()))
    grid = Image.new("RGB", (label_width + columns * (tile + pad) + pad, top + len(names) * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((pad, 6), title, fill="black", font=font)
    for row, name in enumerate(names):
        y = top + row * (tile + pad)
        draw.text((pad, y + tile // 2), name, fill="black", font=font, anchor="lm")
        if not wanted[row]:
            draw.text((label_width, y + tile // 2), "(no images)", fill="gray", font=font, anchor="lm")
        for column, index in enumerate(wanted[row]):
            image = images[index]
            x = label_width + column * (tile + pad)
            grid.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
    return grid


def write_sample_grid(root: Path, manifest: dict, summary: DataSummary, per_class: int = 4) -> dict:
    """Write `sample_grid.png` beside the card; returns what the card says about it."""
    split = "train" if "train" in summary.columns else next(iter(summary.columns))
    buffer = io.BytesIO()
    sample_grid(root, manifest, summary, split, per_class).save(buffer, format="PNG", optimize=True)
    path = root / GRID_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return {"split": split, "per_class": per_class}
