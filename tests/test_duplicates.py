"""Duplicates in `prepare`: exact copies under other names and formats, resized and re-encoded copies, conflicting
labels and copies across the source's own splits: found, grouped, settled by policy, counted and reported."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsynth.cli import main
from skinsynth.duplicates import clusters, conflict_keep, duplicate_pairs, fingerprint, merged_groups
from skinsynth.errors import SkinsynthError
from skinsynth.prepare import PrepareConfig, prepare


def lesion(seed: int, size=(200, 150)) -> Image.Image:
    """A smooth, photo-like test image: a random 6x5 colour field scaled up (noise would not survive a resize)."""
    field = np.random.default_rng(seed).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    return Image.fromarray(field).resize(size, Image.Resampling.BICUBIC)


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def test_fingerprints_catch_format_resize_and_re_encoding_but_not_other_images():
    original = lesion(1)
    png = _roundtrip(original, "PNG")
    assert fingerprint(png).pixels == fingerprint(original).pixels
    resized = _roundtrip(original.resize((180, 135), Image.Resampling.BILINEAR), "JPEG", quality=70)
    re_encoded = _roundtrip(original, "JPEG", quality=50)
    others = [lesion(seed) for seed in range(2, 40)]
    prints = [fingerprint(original), fingerprint(resized), fingerprint(re_encoded), *map(fingerprint, others)]
    assert prints[1].pixels != prints[0].pixels
    assert duplicate_pairs(prints) == [(0, 1), (0, 2), (1, 2)]


def _roundtrip(image: Image.Image, format: str, **options) -> Image.Image:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_clusters_policies_and_group_merging_are_pure():
    assert clusters(6, [(0, 3), (3, 5), (1, 2)]) == [[0, 3, 5], [1, 2]]
    assert conflict_keep(["mel", "nv", "mel"], "drop") == [False, False, False]
    assert conflict_keep(["mel", "nv", "mel"], "majority") == [True, False, True]
    assert conflict_keep(["mel", "nv"], "majority") == [False, False]  # a tie keeps none
    assert conflict_keep(["mel", "nv"], "keep") == [True, True]
    groups = ["a", "b", "c", "d", "e"]
    assert merged_groups(groups, [[0, 1], [1, 2], [3]]) == {"b": "a", "c": "a"}


@pytest.fixture
def copies_tree(tmp_path) -> Path:
    """An ImageFolder with Train/Test folders holding: an exact copy under another name, a PNG copy, a copy resized by
    10 %, a re-encoded copy with another label, and a copy of a training image in Test."""
    root = tmp_path / "tree"
    for i in range(8):
        save(lesion(100 + i), root / "Train" / "melanoma" / f"mel{i}.jpg", quality=95)
        save(lesion(200 + i), root / "Train" / "nevus" / f"nv{i}.jpg", quality=95)
        save(lesion(300 + i), root / "Test" / "melanoma" / f"t_mel{i}.jpg", quality=95)
        save(lesion(400 + i), root / "Test" / "nevus" / f"t_nv{i}.jpg", quality=95)
    source = root / "Train" / "melanoma" / "mel0.jpg"
    (root / "Train" / "melanoma" / "mel0_copy.jpg").write_bytes(source.read_bytes())  # same bytes, other name
    decoded = Image.open(source).convert("RGB")
    save(decoded, root / "Train" / "melanoma" / "mel0.png")  # same pixels as PNG
    save(decoded.resize((180, 135), Image.Resampling.LANCZOS), root / "Train" / "melanoma" / "mel0_small.jpg", quality=90)
    save(Image.open(root / "Train" / "melanoma" / "mel1.jpg").convert("RGB"), root / "Train" / "nevus" / "nv_mislabelled.jpg", quality=60)
    (root / "Test" / "nevus" / "leaked.jpg").write_bytes((root / "Train" / "nevus" / "nv2.jpg").read_bytes())
    return root


def test_prepare_groups_duplicates_drops_conflicts_and_reports_leaks(copies_tree, tmp_path, caplog):
    from datasets import load_dataset

    with caplog.at_level("WARNING"):
        manifest = prepare(copies_tree, "imagefolder", tmp_path / "out", progress=False, validation=0.2, seed=3)
    found = manifest["duplicates"]
    assert (found["clusters"], found["images"], found["exact_copies"], found["near_copies"]) == (3, 8, 3, 2)
    assert found["conflicting"] == {"clusters": 1, "images": 2, "policy": "drop", "dropped": 2}
    assert found["cross_split"] == {"clusters": 1, "images": 2, "policy": "report", "removed_from_train": 0}
    assert manifest["skipped"] == {"conflicting_label": 2}
    assert "sit in more than one of the splits" in caplog.text

    ds = load_dataset(str(tmp_path / "out"))
    rows = {row["group_id"]: split for split, part in ds.items() for row in part.remove_columns("image")}
    groups = [row["group_id"] for part in ds.values() for row in part.remove_columns("image")]
    assert groups.count("Train/melanoma/mel0.jpg") == 4  # the four copies share one group, hence one split
    assert "Train/melanoma/mel1.jpg" not in rows and "Train/nevus/nv_mislabelled.jpg" not in rows
    assert sum(part.num_rows for part in ds.values()) == 32 + 5 - 2

    report = json.loads((tmp_path / "out" / "duplicates.json").read_text())
    by_first = {entry["files"][0]: entry for entry in report["clusters"]}
    assert by_first["Train/melanoma/mel0.jpg"]["kind"] == "near"
    assert sorted(by_first["Train/melanoma/mel0.jpg"]["files"]) == sorted(
        ["Train/melanoma/mel0.jpg", "Train/melanoma/mel0.png", "Train/melanoma/mel0_copy.jpg", "Train/melanoma/mel0_small.jpg"])
    conflict = next(e for e in report["clusters"] if len(set(e["labels"])) > 1)
    assert sorted(conflict["dropped"]) == ["Train/melanoma/mel1.jpg", "Train/nevus/nv_mislabelled.jpg"]
    leak = next(e for e in report["clusters"] if len(set(e["splits"])) > 1)
    assert leak["kind"] == "exact" and sorted(leak["splits"]) == ["test", "train"] and leak["dropped"] == []
    card = (tmp_path / "out" / "README.md").read_text()
    assert "3 sets of copies holding 8 images" in card and "**1 sets (2 images) sit in more than one of the splits" in card


def test_policies_majority_and_drop_train_through_the_cli(copies_tree, tmp_path, capsys):
    save(Image.open(copies_tree / "Train" / "melanoma" / "mel1.jpg").convert("RGB"), copies_tree / "Train" / "melanoma" / "mel1.png")
    code = main(["-q", "prepare", str(copies_tree), "--format", "imagefolder", "--out", str(tmp_path / "out"),
                 "--conflicts", "majority", "--cross-split", "drop-train"])
    assert code == 0
    assert "duplicates: 4 exact and 2 near copies in 3 sets" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert manifest["duplicates"]["conflicting"] == {"clusters": 1, "images": 3, "policy": "majority", "dropped": 1}
    assert manifest["duplicates"]["cross_split"]["removed_from_train"] == 1
    assert manifest["skipped"] == {"conflicting_label": 1, "duplicate_across_splits": 1}
    assert sum(info["num_rows"] for info in manifest["splits"].values()) == 32 + 6 - 2


def test_no_dedup_and_bad_policy(copies_tree, tmp_path):
    manifest = prepare(copies_tree, "imagefolder", tmp_path / "out", progress=False, dedup=False)
    assert manifest["duplicates"] is None and manifest["skipped"] == {}
    assert not (tmp_path / "out" / "duplicates.json").exists()
    with pytest.raises(SkinsynthError, match="--conflicts"):
        PrepareConfig(conflicts="vote")


def test_ham10000_duplicates(ham_subset, tmp_path):
    """Real dermoscopy images of different lesions look alike at 8x8 DCT frequencies; none of them may be merged."""
    manifest = prepare(ham_subset, "ham10000", tmp_path / "out", progress=False)
    assert manifest["duplicates"]["across_groups"] == 0 and manifest["duplicates"]["conflicting"]["clusters"] == 0


@pytest.fixture(scope="module")
def large_copies(ham10000_dir, tmp_path_factory) -> Path:
    """An ImageFolder of 16 real HAM10000 images upscaled to 1600x1200 JPEGs (the size of a full-resolution download
    or a phone photo), with copies: the same bytes, a PNG of the same pixels, resized by 10 %, re-encoded at
    quality 50 under another label."""
    root = tmp_path_factory.mktemp("large") / "tree"
    for i, path in enumerate(sorted((ham10000_dir / "images").glob("*.jpg"))[:16]):
        big = Image.open(path).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC)
        save(big, root / ["melanoma", "nevus"][i % 2] / path.name, quality=90)
    first, second = sorted((root / "melanoma").glob("*.jpg"))[:2]
    (root / "melanoma" / "same_bytes.jpg").write_bytes(first.read_bytes())
    decoded = Image.open(first).convert("RGB")
    save(decoded, root / "melanoma" / "same_pixels.png")
    save(decoded.resize((1440, 1080), Image.Resampling.LANCZOS), root / "melanoma" / "resized.jpg", quality=90)
    save(Image.open(second).convert("RGB"), root / "nevus" / "re_encoded.jpg", quality=50)
    return root


def test_large_jpegs_are_fingerprinted_at_reduced_size_with_the_decisions_of_a_full_decode(large_copies, tmp_path, monkeypatch):
    from skinsynth import duplicates

    files = sorted(p for p in large_copies.rglob("*") if p.is_file())
    full = [fingerprint(Image.open(p).convert("RGB")) for p in files]  # the reference: every image decoded in full
    expected = sorted(sorted(files[i].relative_to(large_copies).as_posix() for i in members) for members in clusters(len(files), duplicate_pairs(full)))
    assert len(expected) == 2 and sorted(map(len, expected)) == [2, 4]

    sizes = []
    monkeypatch.setattr(duplicates, "fingerprint", lambda rgb, original=duplicates.fingerprint: sizes.append(max(rgb.size)) or original(rgb))
    manifest = prepare(large_copies, "imagefolder", tmp_path / "out", progress=False, conflicts="keep")
    report = json.loads((tmp_path / "out" / "duplicates.json").read_text())
    assert sorted(sorted(entry["files"]) for entry in report["clusters"]) == expected
    found = manifest["duplicates"]
    assert (found["clusters"], found["exact_copies"], found["near_copies"]) == (2, 2, 2)  # the same bytes and the PNG are exact
    # The check pass decoded every JPEG at 1/4 scale (1600 -> 400 pixels, 1440 -> 360); only the PNG (no reduced
    # decoding) and, to tell exact copies, the six images in sets of copies were decoded in full.
    assert Counter(sizes) == {400: 18, 360: 1, 1600: 1 + 5, 1440: 1}


def test_hash_distances_without_numpy_2(monkeypatch):
    """pyproject allows numpy 1.x, which has no `bitwise_count`: the byte-table fallback counts the same bits."""
    import numpy as np

    from skinsynth.duplicates import _bit_count

    words = np.random.default_rng(0).integers(0, 2**63, (4, 9), dtype=np.uint64) | np.uint64(1 << 63)
    expected = np.array([[bin(int(w)).count("1") for w in row] for row in words])
    assert (_bit_count(words) == expected).all()
    monkeypatch.delattr(np, "bitwise_count")
    assert (_bit_count(words) == expected).all()
