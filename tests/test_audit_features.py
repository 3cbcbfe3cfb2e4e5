"""Feature extractors: a transformers backbone folder (as a Hub id would be), a classifier's penultimate layer."""

import numpy as np
import pytest
from .audit_datasets import CLASSES, ham_rows, tiny_classifier, write_dataset

from skinsynth.audit.features import ClassifierFeatures, HubFeatures, load_extractor
from skinsynth.data import open_dataset
from skinsynth.errors import PipelineError, SkinsynthError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(ham10000_dir, tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("features") / "ds", {"train": ham_rows(ham10000_dir, 1)})
    return open_dataset(root)["train"]


def test_backbone_folder_gives_unit_cls_features(images, tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28, patch_size=14)).save_pretrained(tmp_path)
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    extractor = load_extractor(str(tmp_path))
    assert isinstance(extractor, HubFeatures) and extractor.name == str(tmp_path)
    features = extractor.extract(images, progress=False)
    assert features.shape == (len(images), 16) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)


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
