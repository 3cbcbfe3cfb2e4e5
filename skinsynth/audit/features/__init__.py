"""Image feature spaces for the audits: every extractor maps a dataset split to float32 rows.

Cosine similarity (memorization) and k-NN balls (quality) are only as meaningful as the space they are taken in, so
the space is always named in the report. One interface (`FeatureExtractor.extract(split)`), these kinds:

- `dinov2-vitl14` and `inception-v3`: the published extractors of FD-DINOv2 (Stein et al. 2023) and FID (Heusel et
  al. 2017), with their published preprocessing, so a Fréchet distance is comparable with the literature;

- a Hub id or local folder of a transformers vision backbone (`AutoModel` + `AutoImageProcessor`): its pooled
  output, or the CLS token. DINOv2 is the default when the Hub is reachable (Stein et al. 2023: Inception features
  mislead on diffusion images);
- `classifier:DIR`: the penultimate layer of an `AutoModelForImageClassification` checkpoint (a `skinsynth
  benchmark` model), i.e. the space in which it tells the classes apart;
- `contrastive`: a small CNN that skinsynth trains on the real training split itself (SimCLR's NT-Xent loss, with
  crops, flips, any rotation, colour jitter and JPEG re-compression as positives: the alterations of the planted
  copies), so an audit works with no download. Its embedding is averaged over the eight flips / 90° rotations of
  the image, so those copies map to the same point exactly.

Images are decoded batch by batch, so memory holds one batch of images plus the output matrix.

The modules: `base` (the interface), `pretrained` (published networks), `contrastive` (the self-trained encoder);
this one picks the extractor a spec names.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import SkinsynthError
from .base import FeatureExtractor, image_batches, l2_normalize, load_image_model, torch_device
from .contrastive import ContrastiveConfig, ContrastiveFeatures, split_digest
from .pretrained import DINOV2_VITL14, DINOV2_VITL14_CONFIG, ClassifierFeatures, Dinov2Features, HubFeatures, InceptionFeatures

__all__ = [
    "DINOV2_VITL14_CONFIG", "ClassifierFeatures", "ContrastiveConfig", "ContrastiveFeatures", "Dinov2Features", "FeatureExtractor", "HubFeatures",
    "InceptionFeatures", "default_features", "image_batches", "l2_normalize", "load_extractor", "load_image_model", "split_digest", "torch_device",
]

logger = logging.getLogger(__name__)

DEFAULT_HUB_FEATURES = "facebook/dinov2-base"


def default_features() -> str:
    """DINOv2 when the Hub can be reached (Stein et al. 2023), otherwise the self-trained `contrastive` encoder."""
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return "contrastive"
    try:
        model_info(DEFAULT_HUB_FEATURES, timeout=5)
    except Exception:  # any network or Hub failure means: offline
        logger.info("the Hub is not reachable; using `contrastive` features")
        return "contrastive"
    return DEFAULT_HUB_FEATURES


def load_extractor(spec: str, *, train_split=None, cache_dir: str | Path | None = None, device: str | None = None,
                   contrastive: ContrastiveConfig = ContrastiveConfig(), progress: bool = True) -> FeatureExtractor:
    """The extractor named by `spec`: "auto", "contrastive", "dinov2-vitl14[:DIR]" (FD-DINOv2), "inception-v3" (FID,
    torchvision weights), "classifier:DIR", or a Hub id / model folder.

    `contrastive` is trained on `train_split` (the real training images) and cached in `cache_dir`.
    """
    if spec == "auto":
        spec = default_features()
    if spec == "contrastive":
        if train_split is None or cache_dir is None:
            raise SkinsynthError("the `contrastive` features need the real training split and a folder to cache the encoder in")
        return ContrastiveFeatures.fit_or_load(train_split, cache_dir, contrastive, device, progress)
    if spec == "dinov2-vitl14" or spec.startswith("dinov2-vitl14:"):
        return Dinov2Features(spec.partition(":")[2] or DINOV2_VITL14, device)
    if spec == "inception-v3":
        return InceptionFeatures(device)
    if spec.startswith("classifier:"):
        path = spec.removeprefix("classifier:")
        if not path:
            raise SkinsynthError("`--features classifier:DIR` needs the folder of an image classifier after the colon")
        return ClassifierFeatures(path, device)
    if not spec:
        raise SkinsynthError("`--features` is empty: give a Hub id, a model folder, `classifier:DIR` or `contrastive`")
    return HubFeatures(spec, device)
