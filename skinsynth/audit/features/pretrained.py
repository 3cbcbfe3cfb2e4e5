"""Feature spaces of published, pretrained networks: any transformers backbone (`HubFeatures`), the FD-DINOv2 and
FID extractors with their published preprocessing, and the penultimate layer of an image classifier."""

from __future__ import annotations

import numpy as np

from ...errors import PipelineError, SkinsynthError
from .base import FeatureExtractor, load_image_model, torch_device


class HubFeatures(FeatureExtractor):
    """A transformers vision backbone: pooled output if it has one, else the CLS token (or the spatial mean)."""

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32):
        self.name = model
        self.batch_size = batch_size
        self.model, self.processor = load_image_model(model, "AutoModel", device)

    def embed(self, images: list) -> np.ndarray:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            if hasattr(self.model, "get_image_features"):  # CLIP-like: the image tower's projected embedding
                features = self.model.get_image_features(pixel_values=inputs["pixel_values"])
                features = getattr(features, "pooler_output", features)
            else:
                output = self.model(pixel_values=inputs["pixel_values"])
                pooled = getattr(output, "pooler_output", None)
                hidden = output.last_hidden_state
                if pooled is not None and pooled.ndim == 2:
                    features = pooled
                elif hidden.ndim == 3:
                    features = hidden[:, 0]
                else:
                    features = hidden.flatten(2).mean(-1)
        return features.float().cpu().numpy()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fixed_size_batch(images: list, size: int, resample: str):
    """Images resized to size x size (no crop, aspect not kept) with PIL's `resample` filter, scaled to [0, 1] and
    normalized with ImageNet's mean and std: the preprocessing of the published FD-DINOv2 and FID extractors."""
    import torch
    from PIL import Image

    filter_ = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[resample]
    arrays = np.stack([np.asarray(image.convert("RGB").resize((size, size), filter_), dtype=np.float32) / 255.0 for image in images])
    arrays = (arrays - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


DINOV2_VITL14 = "facebook/dinov2-large"  # the ViT-L/14 of FD-DINOv2
DINOV2_VITL14_CONFIG = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4, "patch_size": 14, "image_size": 518}


class Dinov2Features(FeatureExtractor):
    """FD-DINOv2 features (Stein et al. 2023, as in their `dgm-eval`): DINOv2 ViT-L/14, each image resized to
    224 x 224 with a bicubic filter (no crop), ImageNet normalization, and the final layer-normed CLS token (1024
    values): `x_norm_clstoken` of the torch-hub model, `pooler_output` of transformers' `Dinov2Model`. Fréchet
    distances in this space are FD-DINOv2 values, comparable with published ones."""

    image_size = 224

    def __init__(self, source: str = DINOV2_VITL14, device: str | None = None, batch_size: int = 32, model=None):
        self.name = "dinov2-vitl14" + ("" if source == DINOV2_VITL14 else f":{source}")
        self.batch_size = batch_size
        if model is None:
            from transformers import Dinov2Model

            try:
                model = Dinov2Model.from_pretrained(source)
            except (OSError, ValueError) as err:
                raise PipelineError(f"could not load the DINOv2 ViT-L/14 from `{source}`: {err}; give `dinov2-vitl14:DIR` with a local copy") from err
        got = {key: getattr(model.config, key) for key in DINOV2_VITL14_CONFIG if key != "image_size"}
        expected = {key: value for key, value in DINOV2_VITL14_CONFIG.items() if key != "image_size"}
        if got != expected:
            raise PipelineError(f"`{source}` is not a DINOv2 ViT-L/14 ({got}); FD-DINOv2 is defined with {expected}")
        self.model = model.to(torch_device(device)).eval()

    def embed(self, images: list) -> np.ndarray:
        import torch

        with torch.no_grad():
            output = self.model(pixel_values=fixed_size_batch(images, self.image_size, "bicubic").to(self.model.device))
        return output.pooler_output.float().cpu().numpy()


class InceptionFeatures(FeatureExtractor):
    """FID features: Inception-v3's 2048 pool features, each image resized to 299 x 299 (bilinear, no crop) with
    ImageNet normalization, from **torchvision's** ImageNet weights (`IMAGENET1K_V1`). The values match FIDs computed
    with those weights (e.g. torchvision-based FID code), not the TensorFlow-ported weights of the original FID,
    pytorch-fid, clean-fid or torch-fidelity, whose numbers are the ones usually published; they differ by a few
    percent. Needs torchvision (optional)."""

    image_size = 299

    def __init__(self, device: str | None = None, batch_size: int = 32, pretrained: bool = True):
        try:
            from torchvision.models import Inception_V3_Weights, inception_v3
        except ImportError:
            raise SkinsynthError("`--features inception-v3` needs torchvision (the build matching your torch: README.md, Optional: torchvision and timm)") from None
        from torch import nn

        self.name = "inception-v3-torchvision" + ("" if pretrained else "-random")
        self.batch_size = batch_size
        weights = Inception_V3_Weights.IMAGENET1K_V1 if pretrained else None
        model = inception_v3(weights=weights, aux_logits=pretrained, init_weights=not pretrained, transform_input=pretrained)
        model.fc = nn.Identity()
        self.model = model.to(torch_device(device)).eval()

    def embed(self, images: list) -> np.ndarray:
        import torch

        with torch.no_grad():
            features = self.model(fixed_size_batch(images, self.image_size, "bilinear").to(next(self.model.parameters()).device))
        return features.float().cpu().numpy()


def _classification_head(model):
    """The final linear layer of an image classifier (transformers names it `classifier`, sometimes `head`/`fc`)."""
    for name in ("classifier", "head", "fc"):
        module = getattr(model, name, None)
        if module is not None:
            return module
    raise PipelineError(f"cannot find the classification head of {type(model).__name__} (looked for `classifier`, `head`, `fc`)")


class ClassifierFeatures(FeatureExtractor):
    """The input of an image classifier's head: the space in which the classifier separates the classes."""

    def __init__(self, path: str, device: str | None = None, batch_size: int = 32):
        self.name = f"classifier:{path}"
        self.batch_size = batch_size
        self.model, self.processor = load_image_model(path, "AutoModelForImageClassification", device)
        self._captured = None
        _classification_head(self.model).register_forward_pre_hook(self._capture)

    def _capture(self, module, args) -> None:
        self._captured = args[0]

    def embed(self, images: list) -> np.ndarray:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            self.model(pixel_values=inputs["pixel_values"])
        return self._captured.flatten(1).float().cpu().numpy()
