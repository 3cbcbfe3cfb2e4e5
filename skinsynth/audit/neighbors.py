"""Exact cosine nearest neighbours in bounded memory: blocks of queries against blocks of references.

Rows are L2-normalized, so cosine similarity is a dot product. Only one `block_queries × block_references`
similarity tile exists at a time (64 MiB at the defaults) plus a running top-k per query, so a million synthetic
images against a hundred thousand real ones needs the two feature matrices and little else; the time is that of
the matrix products. The `torch` backend runs the same tiles on a GPU (or any torch device); faiss (`IndexFlatIP`,
also exact) is used when installed and asked for.
"""

from __future__ import annotations

import numpy as np

from ..errors import SkinsynthError

BLOCK_QUERIES = 4096
BLOCK_REFERENCES = 4096


def check_features(queries: np.ndarray, references: np.ndarray, what: str = "features") -> None:
    """Both matrices 2-D float features of the same width, with at least one reference."""
    for name, x in (("query", queries), ("reference", references)):
        if x.ndim != 2:
            raise SkinsynthError(f"{name} {what} must be a 2-D matrix, got shape {x.shape}")
    if len(references) == 0:
        raise SkinsynthError(f"there are no reference {what} to search (the real set is empty)")
    if queries.shape[1] != references.shape[1]:
        raise SkinsynthError(
            f"query and reference {what} have different widths ({queries.shape[1]} vs {references.shape[1]}): "
            "extract both with the same --features"
        )


def _merge_topk(best_s, best_i, sims, offset, k):
    """Fold one tile's similarities into the running top-k (unsorted)."""
    if k == 1:
        j = sims.argmax(axis=1)
        s = sims[np.arange(len(sims)), j]
        better = s > best_s[:, 0]
        best_s[better, 0] = s[better]
        best_i[better, 0] = j[better] + offset
        return best_s, best_i
    kk = min(k, sims.shape[1])
    j = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    s = np.take_along_axis(sims, j, axis=1)
    all_s = np.concatenate([best_s, s], axis=1)
    all_i = np.concatenate([best_i, j + offset], axis=1)
    keep = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(all_s, keep, axis=1), np.take_along_axis(all_i, keep, axis=1)


def knn(queries: np.ndarray, references: np.ndarray, k: int = 1, *, exclude_self: bool = False,
        block_queries: int = BLOCK_QUERIES, block_references: int = BLOCK_REFERENCES, backend: str = "numpy",
        device: str | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar references of every query: (similarities, indices), each (n_queries, k), best first.

    `exclude_self` (queries and references are the same matrix) skips each row's match with itself, for k-NN
    radii within one set. `backend`: "numpy", "torch" (tiles on `device`, e.g. "cuda") or "faiss". `progress`
    (a tqdm bar) advances by queries done.
    """
    check_features(queries, references)
    limit = len(references) - (1 if exclude_self else 0)
    if not 1 <= k <= limit:
        raise SkinsynthError(f"cannot find {k} nearest neighbours among {limit} reference rows")
    if backend == "faiss":
        return _knn_faiss(queries, references, k, exclude_self)
    if backend == "torch":
        return _knn_torch(queries, references, k, exclude_self, device, block_queries, block_references, progress)
    if backend != "numpy":
        raise SkinsynthError(f"unknown nearest-neighbour backend {backend!r}: use `numpy`, `torch` or `faiss`")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    references = np.ascontiguousarray(references, dtype=np.float32)
    out_s = np.empty((len(queries), k), dtype=np.float32)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    for q0 in range(0, len(queries), block_queries):
        q = queries[q0 : q0 + block_queries]
        best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(q), k), -1, dtype=np.int64)
        for r0 in range(0, len(references), block_references):
            sims = q @ references[r0 : r0 + block_references].T
            if exclude_self:
                rows = np.arange(max(q0, r0), min(q0 + len(q), r0 + sims.shape[1]))
                sims[rows - q0, rows - r0] = -np.inf
            best_s, best_i = _merge_topk(best_s, best_i, sims, r0, k)
            del sims  # free the tile before the next product allocates one
        order = np.argsort(-best_s, axis=1, kind="stable")
        out_s[q0 : q0 + len(q)] = np.take_along_axis(best_s, order, axis=1)
        out_i[q0 : q0 + len(q)] = np.take_along_axis(best_i, order, axis=1)
        if progress is not None:
            progress.update(len(q))
    return out_s, out_i


def _knn_torch(queries, references, k, exclude_self, device, block_queries, block_references, progress):
    """The same tiles with torch on `device`: the references stay on the device, queries go over block by block."""
    import torch

    device = torch.device(device or "cpu")
    refs = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32)).to(device)
    out_s = np.empty((len(queries), k), dtype=np.float32)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    with torch.no_grad():
        for q0 in range(0, len(queries), block_queries):
            q = torch.from_numpy(np.ascontiguousarray(queries[q0 : q0 + block_queries], dtype=np.float32)).to(device)
            best_s = torch.full((len(q), k), -torch.inf, device=device)
            best_i = torch.full((len(q), k), -1, dtype=torch.long, device=device)
            for r0 in range(0, len(refs), block_references):
                sims = q @ refs[r0 : r0 + block_references].T
                low, high = max(q0, r0), min(q0 + len(q), r0 + sims.shape[1])
                if exclude_self and low < high:
                    rows = torch.arange(low, high, device=device)
                    sims[rows - q0, rows - r0] = -torch.inf
                s, j = sims.topk(min(k, sims.shape[1]), dim=1)
                best_s, order = torch.cat([best_s, s], 1).topk(k, dim=1)
                best_i = torch.cat([best_i, j + r0], 1).gather(1, order)
                del sims
            out_s[q0 : q0 + len(q)] = best_s.cpu().numpy()
            out_i[q0 : q0 + len(q)] = best_i.cpu().numpy()
            if progress is not None:
                progress.update(len(q))
    return out_s, out_i


def _knn_faiss(queries, references, k, exclude_self):
    try:
        import faiss
    except ImportError:
        raise SkinsynthError("the `faiss` backend needs faiss: `pip install faiss-cpu` (or use the default numpy backend)") from None
    index = faiss.IndexFlatIP(references.shape[1])
    index.add(np.ascontiguousarray(references, dtype=np.float32))
    s, i = index.search(np.ascontiguousarray(queries, dtype=np.float32), k + int(exclude_self))
    if exclude_self:  # drop each row's own match (ties may put it second)
        own = i == np.arange(len(queries))[:, None]
        own[~own.any(axis=1), -1] = True
        s, i = s[~own].reshape(len(queries), k), i[~own].reshape(len(queries), k)
    return s.astype(np.float32), i.astype(np.int64)


def count_within(queries: np.ndarray, references: np.ndarray, thresholds: np.ndarray, *,
                 block_queries: int = BLOCK_QUERIES, block_references: int = BLOCK_REFERENCES) -> np.ndarray:
    """For every query, how many references `j` it is at least `thresholds[j]` similar to (inside their k-NN balls)."""
    check_features(queries, references)
    counts = np.zeros(len(queries), dtype=np.int64)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    for q0 in range(0, len(queries), block_queries):
        q = queries[q0 : q0 + block_queries]
        for r0 in range(0, len(references), block_references):
            sims = q @ references[r0 : r0 + block_references].T
            counts[q0 : q0 + len(q)] += (sims >= thresholds[None, r0 : r0 + sims.shape[1]]).sum(axis=1)
            del sims
    return counts
