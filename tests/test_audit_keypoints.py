"""The keypoint copy detector on its own: textured images (no HAM10000 needed) and their altered copies."""

import datasets
import numpy as np
import pytest
from PIL import Image, ImageOps

from skinsynth.audit.copies import plant_copy
from skinsynth.audit.keypoints import KeypointConfig, KeypointMatcher, describe, root_sift
from skinsynth.errors import SkinsynthError


def texture(seed: int, size=(200, 150)) -> Image.Image:
    """A smooth random colour texture with blobs: plenty of SIFT keypoints, and every seed a different "photo"."""
    rng = np.random.default_rng(seed)
    small = rng.random((size[1] // 10, size[0] // 10, 3))
    image = Image.fromarray((small * 255).astype(np.uint8)).resize(size, Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32)
    yy, xx = np.mgrid[: size[1], : size[0]]
    for _ in range(12):
        cx, cy, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(4, 15)
        array[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] *= rng.uniform(0.2, 0.6)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def as_dataset(images) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


@pytest.fixture(scope="module")
def matcher():
    return KeypointMatcher(as_dataset([texture(seed) for seed in range(30)]), progress=False)


def test_descriptors_are_compact_and_root_sift_is_unit_length():
    positions, descriptors = describe(texture(0), KeypointConfig())
    assert descriptors.dtype == np.uint8 and descriptors.shape == (len(positions), 128) and len(positions) > 50
    assert positions.min() >= 0 and positions[:, 0].max() < 400 and positions[:, 1].max() < 300  # longer side at 400 px
    np.testing.assert_allclose(np.linalg.norm(root_sift(descriptors), axis=1), 1.0, rtol=1e-5)


def test_copies_score_high_on_their_source_and_other_images_score_low(matcher):
    rng = np.random.default_rng(0)
    copies = [plant_copy(texture(seed), rng, "heavy") for seed in range(10)] + [ImageOps.mirror(texture(10))]
    scores, rows = matcher.nearest(as_dataset(copies), progress=False)
    assert list(rows) == list(range(11))  # a mirror image is matched through the query's mirror view
    assert scores.min() >= 15
    others, _ = matcher.nearest(as_dataset([texture(seed) for seed in range(100, 110)]), progress=False)
    assert others.max() <= 6
    again, again_rows = matcher.nearest(as_dataset(copies), progress=False)
    assert np.array_equal(again, scores) and np.array_equal(again_rows, rows)  # deterministic


def test_an_image_without_keypoints_scores_zero(matcher):
    scores, rows = matcher.nearest(as_dataset([Image.new("RGB", (64, 64), (120, 80, 60))]), progress=False)
    assert scores[0] == 0 and rows[0] == -1


@pytest.mark.parametrize("field, value", [("side", 0), ("candidates", 0), ("ratio", 1.5)])
def test_bad_config_is_refused(field, value):
    with pytest.raises(SkinsynthError, match=field):
        KeypointConfig(**{field: value})
