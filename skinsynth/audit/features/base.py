"""The one interface every feature space implements (`FeatureExtractor`), and the helpers they share: batches of
decoded images, row normalization, and loading a transformers vision model onto a device."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ...errors import PipelineError


def image_batches(split, batch_size: int):
    """The split's images as lists of RGB PIL images, `batch_size` at a time."""
    images = split.select_columns(["image"])
    for start in range(0, len(images), batch_size):
        yield [image.convert("RGB") for image in images[start : start + batch_size]["image"]]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class FeatureExtractor(ABC):
    """Maps images to rows of a fixed-width matrix; `name` is what reports record as the feature space."""

    name: str
    batch_size: int = 32

    @abstractmethod
    def embed(self, images: list) -> np.ndarray:
        """Raw (un-normalized) features of a batch of RGB PIL images, shape (len(images), dim)."""

    def extract(self, split, desc: str = "features", progress: bool = True) -> np.ndarray:
        """float32 raw features of every image of `split`, in row order. Raw, because the Fréchet distance and KID are
        published on raw features; cosine similarity and the k-NN metrics normalize them (`l2_normalize`)."""
        from tqdm.auto import tqdm

        out: np.ndarray | None = None
        row = 0
        with tqdm(total=len(split), unit="img", desc=desc, disable=not progress) as bar:
            for batch in image_batches(split, self.batch_size):
                features = np.asarray(self.embed(batch), dtype=np.float32).reshape(len(batch), -1)
                if out is None:
                    out = np.empty((len(split), features.shape[1]), dtype=np.float32)
                out[row : row + len(batch)] = features
                row += len(batch)
                bar.update(len(batch))
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def torch_device(device: str | None) -> str:
    from ...pipeline import default_device

    return device or default_device()


def load_image_model(path: str, auto_class: str = "AutoModel", device: str | None = None):
    """(model in eval mode, image processor) from a Hub id or folder, with one clear error if either fails."""
    import transformers

    try:
        model = getattr(transformers, auto_class).from_pretrained(path)
        processor = transformers.AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"could not load a transformers vision model from `{path}` ({auto_class}): {err}") from err
    return model.to(torch_device(device)).eval(), processor
