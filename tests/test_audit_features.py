"""Feature extractors: a transformers backbone folder (as a Hub id would be), a classifier's penultimate layer."""

import numpy as np
import pytest

from skinsynth.audit.features import ClassifierFeatures, HubFeatures, load_extractor
from skinsynth.data import open_dataset
from skinsynth.errors import PipelineError, SkinsynthError

from .audit_datasets import CLASSES, ham_rows, tiny_classifier, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(ham10000_dir, tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("features") / "ds", {"train": ham_rows(ham10000_dir, 1)})
    return open_dataset(root)["train"]


def test_backbone_folder_gives_cls_features(images, tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28, patch_size=14)).save_pretrained(tmp_path)
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    extractor = load_extractor(str(tmp_path))
    assert isinstance(extractor, HubFeatures) and extractor.name == str(tmp_path)
    features = extractor.extract(images, progress=False)
    assert features.shape == (len(images), 16) and features.dtype == np.float32
    assert np.isfinite(features).all() and not np.allclose(np.linalg.norm(features, axis=1), 1.0)  # raw, as FD needs


def test_classifier_features_are_the_heads_input(images, tmp_path):
    import torch

    path = tiny_classifier(tmp_path / "clf", CLASSES)
    extractor = load_extractor(f"classifier:{path}")
    assert isinstance(extractor, ClassifierFeatures)
    features = extractor.extract(images, progress=False)
    assert features.shape == (len(images), 16)  # ConvNeXt's last hidden size
    # the head applied to the (un-normalized) captured input reproduces the logits
    batch = [image.convert("RGB") for image in images[:3]["image"]]
    raw = torch.from_numpy(extractor.embed(batch))
    inputs = extractor.processor(images=batch, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(extractor.model.classifier(raw), extractor.model(**inputs).logits)


def test_bad_feature_specs(tmp_path):
    with pytest.raises(PipelineError, match="could not load"):
        load_extractor(str(tmp_path / "missing"))
    with pytest.raises(SkinsynthError, match="training split"):
        load_extractor("contrastive")


def test_auto_falls_back_to_contrastive_offline(monkeypatch):
    from huggingface_hub import constants

    from skinsynth.audit.features import default_features

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert default_features() == "contrastive"


@pytest.mark.slow
def test_fd_dinov2_is_vit_l14_on_224_bicubic_imagenet_normalized_cls(images):
    """The published FD-DINOv2 path, on a random-weight ViT-L/14 built from its config (no download)."""
    import torch
    from PIL import Image
    from transformers import Dinov2Config, Dinov2Model

    from skinsynth.audit.features import DINOV2_VITL14_CONFIG, Dinov2Features

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(**DINOV2_VITL14_CONFIG, intermediate_size=4096))
    extractor = Dinov2Features("random-vitl14", model=model)
    assert extractor.name == "dinov2-vitl14:random-vitl14"
    image = images[0]["image"].convert("RGB")
    seen = {}
    model.register_forward_hook(lambda module, args, kwargs, output: seen.update(pixels=kwargs["pixel_values"], output=output), with_kwargs=True)
    features = extractor.embed([image])  # one forward pass of the 0.3B-parameter model
    assert features.shape == (1, 1024)
    # the reference preprocessing: resize to 224x224 bicubic, [0, 1], ImageNet mean/std
    pixels = (np.asarray(image.resize((224, 224), Image.BICUBIC), dtype=np.float64) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(seen["pixels"][0].permute(1, 2, 0).numpy(), pixels, rtol=1e-5, atol=1e-5)
    # the feature: the final layer-normed CLS token
    np.testing.assert_array_equal(features[0], seen["output"].last_hidden_state[0, 0].numpy())
    small = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=14))
    with pytest.raises(PipelineError, match="not a DINOv2 ViT-L/14"):
        Dinov2Features("small", model=small)


def test_inception_needs_torchvision_and_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(SkinsynthError, match="needs torchvision"):
        load_extractor("inception-v3")


def test_inception_pool_features_when_torchvision_is_installed(images):
    pytest.importorskip("torchvision")
    from skinsynth.audit.features import InceptionFeatures

    extractor = InceptionFeatures(pretrained=False)
    assert extractor.embed([images[0]["image"].convert("RGB")]).shape == (1, 2048)
