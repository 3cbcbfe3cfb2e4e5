"""Copy detection with local features: SIFT keypoints matched to the training images and verified geometrically.

Why not an embedding: to flag copies at a 1 % false-positive rate, a global embedding must tell thousands of
look-alike dermoscopy photos apart under any crop, rotation and colour change, which the small self-trained
`contrastive` encoder cannot (its planted-copy recall was near 0). Local features answer the copy question directly:
a copy of a photo shares dozens of keypoints with it under one similarity transform (any rotation, scale, shift or
crop), a photo of another lesion shares a handful at most. The classic retrieval-then-verification pipeline (Sivic &
Zisserman 2003, Philbin et al. 2007):

1. every image is resized so that its longer side is `side` pixels, made grayscale (colour changes do not move
   keypoints) and described by at most `max_keypoints` SIFT keypoints (Lowe 2004);
2. a visual vocabulary (k-means on training descriptors, seeded) turns every image into a tf-idf bag of words; a
   query's `candidates` most similar training images are its shortlist;
3. each query descriptor is matched to its nearest RootSIFT descriptor (Arandjelović & Zisserman 2012) in the
   shortlist and kept when it passes Lowe's ratio test against the second nearest; the matches to each candidate
   are fitted with a similarity transform by RANSAC (OpenCV's `estimateAffinePartial2D`);
4. the score is the largest number of RANSAC inliers over the candidates and over the query and its mirror image
   (SIFT is invariant to rotation and scale, not to reflection).

The score counts verified matches (0: nothing in common); the memorization audit thresholds it as it would a cosine
similarity. Memory: 128 bytes per training keypoint (uint8 SIFT), the vocabulary and a sparse bag-of-words matrix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import SkinsynthError
from .neighbors import knn

MIN_MATCHES = 3  # a similarity transform needs 2 points; RANSAC needs one more to have anything to verify
VOCABULARY_SAMPLE = 100_000  # training descriptors k-means is fitted on


@dataclass(frozen=True)
class KeypointConfig:
    """How images are described and matched. The defaults were chosen on HAM10000 (see `benchmarks/bench_audit.py`)."""

    side: int = 400  # pixels of the longer side images are described at
    max_keypoints: int = 300
    contrast_threshold: float = 0.02  # SIFT's detector threshold; dermoscopy images are low-contrast (OpenCV's default: 0.04)
    vocabulary: int = 8192  # visual words (fewer when the training images have few descriptors)
    candidates: int = 100  # training images verified per query
    ratio: float = 0.85  # Lowe's ratio test
    ransac_pixels: float = 4.0  # inlier distance, in pixels at `side`
    seed: int = 0

    def __post_init__(self):
        for name in ("side", "max_keypoints", "vocabulary", "candidates"):
            if getattr(self, name) < 1:
                raise SkinsynthError(f"keypoint `{name}` must be positive, got {getattr(self, name)}")
        if not 0 < self.ratio <= 1:
            raise SkinsynthError(f"keypoint `ratio` must be in (0, 1], got {self.ratio}")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise SkinsynthError("`--features keypoints` needs OpenCV: `pip install opencv-python-headless`") from None
    return cv2


def describe(image, config: KeypointConfig, detector=None) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 2) float32 in pixels at `config.side`, SIFT descriptors (n, 128) uint8) of a PIL image."""
    cv2 = _cv2()
    detector = detector or cv2.SIFT_create(nfeatures=config.max_keypoints, contrastThreshold=config.contrast_threshold)
    gray = np.asarray(image.convert("L"))
    scale = config.side / max(gray.shape)
    gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    keypoints, descriptors = detector.detectAndCompute(gray, None)
    if descriptors is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    positions = np.asarray([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return positions, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT: L1-normalize, then square root; the dot product of two of them is the Hellinger kernel, and each has
    unit L2 norm, so Euclidean distances follow from dot products."""
    d = descriptors.astype(np.float32)
    return np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7))


class KeypointMatcher:
    """The training images' keypoints, vocabulary and bag-of-words index; `nearest` scores query images against them."""

    name = "keypoints"
    SAVED = "keypoints.npz"  # what `save` writes into its folder
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    label = "verified keypoint matches (SIFT + RANSAC)"
    score = "number of SIFT keypoints matched to the nearest training image under one similarity transform (RANSAC inliers)"

    def __init__(self, reference, config: KeypointConfig = KeypointConfig(), progress: bool = True):
        from tqdm.auto import tqdm

        from .features import image_batches

        self.config = config
        self._detector = _cv2().SIFT_create(nfeatures=config.max_keypoints, contrastThreshold=config.contrast_threshold)
        positions, descriptors = [], []
        with tqdm(total=len(reference), unit="img", desc="keypoints: real train", disable=not progress) as bar:
            for batch in image_batches(reference, 64):
                for image in batch:
                    p, d = describe(image, config, self._detector)
                    positions.append(p)
                    descriptors.append(d)
                bar.update(len(batch))
        self.positions = positions
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in descriptors])]).astype(np.int64)
        self.descriptors = np.concatenate(descriptors) if descriptors else np.zeros((0, 128), np.uint8)
        if len(self.descriptors) < 2:
            raise SkinsynthError("the real training images have fewer than 2 SIFT keypoints in all: nothing to match copies against")
        self._fit_index()

    @staticmethod
    def is_saved(folder: Path) -> bool:
        return (Path(folder) / KeypointMatcher.SAVED).is_file()

    def save(self, folder: Path) -> None:
        """Write the training keypoints and the fitted index to `folder` (atomically: a reader sees all or nothing)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{self.SAVED}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, positions=np.concatenate(self.positions) if self.positions else np.zeros((0, 2), np.float32), offsets=self.offsets,
                     descriptors=self.descriptors, words=self._words, idf=self._idf, bags_data=self._bags.data, bags_indices=self._bags.indices,
                     bags_indptr=self._bags.indptr, bags_shape=np.asarray(self._bags.shape), config=json.dumps(asdict(self.config)))
        os.replace(tmp, folder / self.SAVED)

    @classmethod
    def load(cls, folder: Path, config: KeypointConfig = KeypointConfig()) -> KeypointMatcher:
        """A matcher `save` wrote with the same `config`: nothing is described or fitted again."""
        from scipy import sparse

        with np.load(Path(folder) / cls.SAVED) as saved:
            if json.loads(str(saved["config"])) != asdict(config):
                raise SkinsynthError(f"the keypoints saved in {folder} were made with other settings; remove the folder")
            matcher = cls.__new__(cls)
            matcher.config = config
            matcher._detector = _cv2().SIFT_create(nfeatures=config.max_keypoints, contrastThreshold=config.contrast_threshold)
            matcher.offsets, matcher.descriptors = saved["offsets"], saved["descriptors"]
            matcher.positions = np.split(saved["positions"], matcher.offsets[1:-1])
            matcher._words, matcher._idf = saved["words"], saved["idf"]
            matcher._bags = sparse.csr_matrix((saved["bags_data"], saved["bags_indices"], saved["bags_indptr"]), shape=tuple(saved["bags_shape"]))
        return matcher

    def _fit_index(self) -> None:
        """Vocabulary (seeded mini-batch k-means on up to VOCABULARY_SAMPLE RootSIFT descriptors) and tf-idf bags."""
        from scipy import sparse
        from sklearn.cluster import MiniBatchKMeans

        rng = np.random.default_rng(self.config.seed)
        sample = root_sift(self.descriptors[np.sort(rng.permutation(len(self.descriptors))[:VOCABULARY_SAMPLE])])
        words = int(min(self.config.vocabulary, max(2, len(sample) // 20)))
        kmeans = MiniBatchKMeans(words, batch_size=4096, n_init=1, max_iter=20, random_state=self.config.seed).fit(sample)
        centres = kmeans.cluster_centers_.astype(np.float32)
        # nearest centre by Euclidean distance = largest d·c - |c|²/2: a dot product, so the blocked `knn` finds it
        self._words = np.c_[centres, -0.5 * (centres * centres).sum(axis=1)].astype(np.float32)
        owner = np.repeat(np.arange(len(self.positions)), np.diff(self.offsets))
        counts = sparse.csr_matrix((np.ones(len(owner), np.float32), (owner, self._word_of(self.descriptors))), shape=(len(self.positions), words))
        counts.sum_duplicates()
        document_frequency = np.bincount(counts.indices, minlength=words)
        self._idf = np.log(len(self.positions) / np.maximum(document_frequency, 1)).astype(np.float32)
        self._bags = self._tfidf(counts)

    def _word_of(self, descriptors: np.ndarray) -> np.ndarray:
        rows = np.c_[root_sift(descriptors), np.ones(len(descriptors), np.float32)]
        return knn(rows, self._words, 1)[1][:, 0]

    def _tfidf(self, counts):
        from scipy import sparse

        weighted = sparse.csr_matrix(counts.multiply(self._idf[None, :]))
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        return sparse.csr_matrix(sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted)

    def shortlist(self, descriptors: np.ndarray) -> np.ndarray:
        """The `candidates` training rows whose bags of words are closest to the query's (best first)."""
        from scipy import sparse

        words = self._word_of(descriptors)
        bag = self._tfidf(sparse.csr_matrix((np.ones(len(words), np.float32), (np.zeros(len(words), int), words)), shape=(1, self._words.shape[0])))
        similarity = (self._bags @ bag.T).toarray().ravel()
        k = min(self.config.candidates, len(similarity))
        top = np.argpartition(-similarity, k - 1)[:k]
        return top[np.argsort(-similarity[top], kind="stable")]

    def match(self, positions: np.ndarray, descriptors: np.ndarray) -> tuple[int, int]:
        """(inliers, training row) of the best-verified candidate for one view of a query; (0, the shortlist's first row)
        when none verifies, or (0, -1) for an image without keypoints."""
        cv2 = _cv2()
        if len(descriptors) < MIN_MATCHES:
            return 0, -1
        candidates = self.shortlist(descriptors)
        pieces = [slice(self.offsets[c], self.offsets[c + 1]) for c in candidates]
        reference = root_sift(np.concatenate([self.descriptors[p] for p in pieces]))
        if len(reference) < 2:
            return 0, int(candidates[0])
        reference_positions = np.concatenate([self.positions[c] for c in candidates])
        owner = np.repeat(candidates, [p.stop - p.start for p in pieces])
        similarity = root_sift(descriptors) @ reference.T
        two = np.argpartition(-similarity, 1, axis=1)[:, :2]
        two = np.take_along_axis(two, np.argsort(-np.take_along_axis(similarity, two, axis=1), axis=1), axis=1)
        first = two[:, 0]
        distance = np.sqrt(np.maximum(2 - 2 * np.take_along_axis(similarity, two, axis=1), 0))  # unit vectors
        good = distance[:, 0] < self.config.ratio * distance[:, 1]
        best = (0, int(candidates[0]))
        for candidate in candidates:  # shortlist order: ties go to the better bag-of-words match
            chosen = good & (owner[first] == candidate)
            if chosen.sum() < MIN_MATCHES:
                continue
            _, inliers = cv2.estimateAffinePartial2D(positions[chosen], reference_positions[first[chosen]], method=cv2.RANSAC,
                                                     ransacReprojThreshold=self.config.ransac_pixels)
            count = int(inliers.sum()) if inliers is not None else 0
            if count > best[0]:
                best = (count, int(candidate))
        return best

    def _best_view(self, image) -> tuple[int, int]:
        """(score, training row) of the better of the image and its mirror; a detector of its own (thread safety)."""
        from PIL import ImageOps

        return max((self.match(*describe(view, self.config)) for view in (image, ImageOps.mirror(image))), key=lambda v: v[0])

    def nearest(self, split, desc: str = "keypoints", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32, nearest training rows int64) of every image of `split`: the best of the image and its mirror."""
        from tqdm.auto import tqdm

        from .features import image_batches

        scores, rows = np.zeros(len(split), np.float32), np.full(len(split), -1, np.int64)
        with tqdm(total=len(split), unit="img", desc=desc, disable=not progress) as bar:
            for start, batch in zip(range(0, len(split), 64), image_batches(split, 64)):
                scores[start : start + len(batch)], rows[start : start + len(batch)] = self.nearest_images(batch)
                bar.update(len(batch))
        return scores, rows

    def nearest_images(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        """`nearest` for a list of RGB PIL images (what `generate --filter-copies` checks), in `threads` threads: OpenCV
        and numpy release the GIL, so a batch is checked in about the time of one image on a machine with as many cores."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, min(len(images), self.threads))) as pool:
            best = list(pool.map(self._best_view, images))
        return np.asarray([b[0] for b in best], np.float32).reshape(-1), np.asarray([b[1] for b in best], np.int64).reshape(-1)
