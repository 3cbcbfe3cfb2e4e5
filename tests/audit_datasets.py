"""Small datasets for the audit tests, built from HAM10000 images with `write_split` (the layout every command reads)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import datasets
from PIL import Image, ImageOps

from skinsynth.shards import atomic_write_json, splits_manifest, write_split

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def image_row(ham_dir: Path, row: dict) -> dict:
    """A dataset row of the HAM10000 image a metadata.csv row names, with its lesion as the group."""
    data = (ham_dir / "images" / f"{row['image_id']}.jpg").read_bytes()
    return {"image": {"bytes": data, "path": f"{row['image_id']}.jpg"}, "label": CLASSES.index(row["dx"]), "image_id": row["image_id"], "group_id": row["lesion_id"]}


def ham_rows(ham_dir: Path, per_class: int, skip: int = 0) -> list[dict]:
    """One image per lesion: lesions `skip` to `skip + per_class` of every diagnosis, in metadata order."""
    with open(ham_dir / "metadata.csv", newline="") as f:
        metadata = list(csv.DictReader(f))
    seen: dict[str, list[str]] = {dx: [] for dx in CLASSES}
    rows = []
    for row in metadata:
        lesions = seen[row["dx"]]
        if row["lesion_id"] in lesions:
            continue
        lesions.append(row["lesion_id"])
        if skip <= len(lesions) - 1 < skip + per_class:
            rows.append(image_row(ham_dir, row))
    return rows


def ham_lesions(ham_dir: Path, count: int, offset: int, stride: int) -> list[dict]:
    """One image (the first) of lesions `offset`, `offset + stride`, … of HAM10000 in metadata order, `count` of them:
    every diagnosis, and disjoint lesions (patients, as far as HAM10000 tells) for different offsets."""
    with open(ham_dir / "metadata.csv", newline="") as f:
        metadata = list(csv.DictReader(f))
    first: dict[str, dict] = {}
    for row in metadata:
        first.setdefault(row["lesion_id"], row)
    return [image_row(ham_dir, row) for row in list(first.values())[offset::stride][:count]]


def features(names: list[str] = CLASSES) -> datasets.Features:
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "image_id": datasets.Value("string"),
                              "group_id": datasets.Value("string")})


def write_dataset(root: Path, splits: dict[str, list[dict]], manifest: dict | None = None, names: list[str] = CLASSES) -> Path:
    infos = {split: write_split(root, split, rows, features(names), shard_size=50) for split, rows in splits.items()}
    atomic_write_json(root / "prepare.json", {"kind": "real", **(manifest or {}), "splits": splits_manifest(infos)})
    return root


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def planted_copy(row: dict, how: str) -> dict:
    """A real image, flipped / rotated / re-compressed, as a synthetic row."""
    image = Image.open(io.BytesIO(row["image"]["bytes"]))
    changed = {"flip": ImageOps.mirror, "rotate": lambda im: im.rotate(90, expand=True), "jpeg": lambda im: im}[how](image)
    return {"image": {"bytes": jpeg(changed, 35 if how == "jpeg" else 90), "path": f"copy-{how}-{row['image_id']}.jpg"}, "label": row["label"], "image_id": f"copy-{how}-{row['image_id']}",
            "group_id": row["group_id"]}


def tiny_classifier(path: Path, names: list[str], bias: list[float] | None = None, seed: int = 0) -> Path:
    """A ~10k-parameter ConvNeXt image classifier saved with its image processor, like a `skinsynth benchmark`
    checkpoint. With `bias`, the head's weights are zeroed: every image gets softmax(bias), an output the test controls."""
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    torch.manual_seed(seed)
    config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32,
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model = ConvNextForImageClassification(config)
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(path)
    return path

