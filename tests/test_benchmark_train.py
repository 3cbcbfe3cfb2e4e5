"""Augmentations and classifier loading, without data files."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from skinsynth.benchmark.classifier import (
    Normalization,
    check_classifier,
    load_classifier,
    normalization,
)
from skinsynth.benchmark.train import (
    EpochShuffle,
    ImageRows,
    augment,
    color_jitter,
    normalize,
    to_array,
)
from skinsynth.errors import PipelineError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FixedFactors:
    """Stands in for a numpy Generator whose jitter factors are known."""

    def __init__(self, factors):
        self.factors = np.asarray(factors)

    def uniform(self, low, high, size):
        return self.factors


def test_color_jitter_matches_pil_image_enhance():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    expected = image
    for enhancer, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), (1.08, 0.93, 1.1)):
        expected = enhancer(expected).enhance(factor)
    ours = color_jitter(to_array(image), FixedFactors([1.08, 0.93, 1.1]))
    assert np.abs(ours - to_array(expected)).max() <= 3 / 255  # PIL rounds to uint8 after every step
    assert np.allclose(color_jitter(to_array(image), FixedFactors([1.0, 1.0, 1.0])), to_array(image), atol=1e-6)


def test_augment_is_seeded_and_keeps_size_and_range():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    a = augment(image, 32, np.random.default_rng(5))
    assert a.shape == (32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, augment(image, 32, np.random.default_rng(5)))
    assert not np.array_equal(a, augment(image, 32, np.random.default_rng(6)))


def test_image_rows_decode_augment_by_seed_epoch_and_index():
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    split = datasets.Dataset.from_dict({"image": [{"bytes": buffer.getvalue(), "path": "a.png"}] * 2, "label": [0, 1]},
                                       features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))
    norm = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    rows = ImageRows([(split, np.array([1, 0]), np.array([1, 0]))], 16, norm, train=True, seed=3)
    pixels, label = rows[(0, 0)]
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.uint8 and label == 1
    assert rows.cache is not None and rows.cache[0].shape == (32, 43, 3)  # decoded once, at most twice the input size
    inputs = normalize(pixels[None], norm)
    assert inputs.dtype == torch.float32 and torch.allclose(inputs, (pixels[None].float() / 255 - 0.5) / 0.5)
    assert np.array_equal(pixels, rows[(0, 0)][0])
    assert not np.array_equal(pixels, rows[(0, 1)][0])  # same image, other index: other augmentation
    assert not np.array_equal(pixels, rows[(1, 0)][0])  # next epoch: other augmentation
    evaluation = ImageRows([(split, np.array([0, 1]), np.array([0, 1]))], 16, norm, train=False)
    assert np.array_equal(evaluation[0][0], evaluation[1][0])  # no augmentation: identical images give identical inputs
    assert evaluation.cache[0].shape == (16, 16, 3)  # evaluation caches the final centred square
    per_access = ImageRows([(split, np.array([1, 0]), np.array([1, 0]))], 16, norm, train=True, seed=3, cache_limit=0)
    assert per_access.cache is None and np.array_equal(per_access[(0, 0)][0], pixels)  # too big to cache: decoded per access, same pixels


def test_image_rows_and_digests_read_the_rows_a_selected_split_maps_to():
    """`select`, `filter` and `shuffle` give a split that maps its positions onto rows of the same Arrow table:
    `ImageRows` and the leak check's digests must read the rows it maps to, not the table's rows at those positions."""
    import hashlib

    from skinsynth.benchmark.conditions import image_digests

    def png(red: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (red, 0, 0)).save(buffer, format="PNG")
        return buffer.getvalue()

    split = datasets.Dataset.from_dict({"image": [{"bytes": png(30 * i), "path": f"{i}.png"} for i in range(6)], "label": [i % 2 for i in range(6)]},
                                       features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))
    norm = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for view in (split.select([4, 1, 3]), split.filter(lambda row: row["label"] == 1), split.shuffle(seed=1)):
        reds = [view[i]["image"].getpixel((0, 0))[0] for i in range(len(view))]  # what the split's own row access shows
        assert reds != [30 * i for i in range(len(view))]  # the view is not the table's first rows
        rows = np.arange(len(view))[::-1]
        for cache_limit in (1 << 30, 0):
            images = ImageRows([(view, rows, np.asarray(view["label"])[rows])], 8, norm, train=False, cache_limit=cache_limit)
            assert [int(images[i][0][0, 0, 0]) for i in range(len(images))] == reds[::-1]
        stored = view.cast_column("image", datasets.Image(decode=False))["image"]
        assert list(image_digests(view)) == [hashlib.sha1(image["bytes"]).hexdigest() for image in stored]


def test_epoch_shuffle_is_a_seeded_permutation_per_epoch():
    shuffle = EpochShuffle(10, seed=4)
    first = list(shuffle)
    assert sorted(i for _, i in first) == list(range(10)) and {e for e, _ in first} == {0}
    assert list(shuffle) == first
    shuffle.set_epoch(1)
    second = list(shuffle)
    assert {e for e, _ in second} == {1} and [i for _, i in second] != [i for _, i in first]
    assert list(EpochShuffle(10, seed=5)) != first


def test_config_only_folder_is_a_fresh_classifier(tmp_path):
    from transformers import ResNetConfig

    ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic").save_pretrained(tmp_path)
    model = load_classifier(str(tmp_path), ["x", "y", "z"])
    assert model.config.num_labels == 3 and model.config.id2label == {0: "x", 1: "y", 2: "z"}


def test_not_a_model_folder(tmp_path):
    with pytest.raises(PipelineError, match="no config.json"):
        check_classifier(str(tmp_path))


def test_saved_model_gets_a_new_head_and_its_processor_statistics(tmp_path):
    from transformers import AutoModelForImageClassification, ResNetConfig, ViTImageProcessor

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic", num_labels=3)
    AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path)
    ViTImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6], size={"height": 48, "width": 48}).save_pretrained(tmp_path)
    pretrained = AutoModelForImageClassification.from_pretrained(tmp_path)
    model = load_classifier(str(tmp_path), list("abcdefg"))
    assert model.config.num_labels == 7 and model.classifier[-1].out_features == 7
    assert all((a == b).all() for a, b in zip(model.resnet.state_dict().values(), pretrained.resnet.state_dict().values()))  # backbone kept
    assert normalization(str(tmp_path)) == Normalization((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 48)


def test_class_weights_are_inverse_frequency_with_mean_one():
    from skinsynth.benchmark.train import class_weights

    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)  # class 3 absent
    assert weights.tolist() == pytest.approx([6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2), 0.0])
    assert float((weights[[0, 0, 0, 1, 2, 2]]).mean()) == pytest.approx(1.0)


def test_selection_metric_defaults_keep_the_papers_choice_for_its_preset():
    from skinsynth.benchmark.experiment import default_select_by
    from skinsynth.benchmark.train import validation_metrics

    assert default_select_by("akrout2023") == "top1" and default_select_by("ratio-sweep") == "balanced_accuracy" and default_select_by(None) == "balanced_accuracy"
    scores = np.log(np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32))
    values = validation_metrics(scores, np.array([0, 0, 1]))
    assert values["top1"] == 1.0 and values["balanced_accuracy"] == 1.0
    assert values["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.6, 0.7])), rel=1e-5)
