"""Exact nearest-neighbour search (skinsynth.audit.neighbors.knn) against its floor: the blocked matrix product alone.

    PYTHONPATH=. python benchmarks/bench_neighbors.py [--queries 100000] [--references 10000] [--dim 512]

The memorization audit's cost is one similarity per (synthetic, real) pair. The floor computes every tile
`queries[block] @ references[block].T` and throws it away; `knn` also keeps a running top-1 per query. Both run on
the same random unit vectors; peak memory is what Python allocated beyond the two input matrices (tracemalloc sees
numpy's buffers). Goal: `knn` within 2x of the floor's time, with memory bounded by the tile, not by the matrix.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from skinsynth.audit.neighbors import BLOCK_QUERIES, BLOCK_REFERENCES, knn


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blocked_product(queries: np.ndarray, references: np.ndarray) -> None:
    for q0 in range(0, len(queries), BLOCK_QUERIES):
        for r0 in range(0, len(references), BLOCK_REFERENCES):
            queries[q0 : q0 + BLOCK_QUERIES] @ references[r0 : r0 + BLOCK_REFERENCES].T


def measure(fn, *args) -> tuple[float, float]:
    """(seconds, peak MiB allocated during the call)."""
    tracemalloc.start()
    started = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--references", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    queries, references = unit_vectors(args.queries, args.dim, 0), unit_vectors(args.references, args.dim, 1)
    inputs = (queries.nbytes + references.nbytes) / 2**20
    print(f"{args.queries:,} queries x {args.references:,} references x {args.dim} dims (inputs: {inputs:.0f} MiB; tile {BLOCK_QUERIES}x{BLOCK_REFERENCES})")
    floor_s, floor_mb = measure(blocked_product, queries, references)
    knn_s, knn_mb = measure(knn, queries, references, 1)
    print(f"{'blocked matrix product (floor)':<32} {floor_s:8.2f} s  peak {floor_mb:7.1f} MiB")
    print(f"{'knn top-1 (exact)':<32} {knn_s:8.2f} s  peak {knn_mb:7.1f} MiB")
    print(f"knn / floor: {knn_s / floor_s:.2f}x time; full similarity matrix would need {args.queries * args.references * 4 / 2**20:,.0f} MiB")
    # spot-check exactness on a few queries against the full product
    rows = np.arange(0, args.queries, max(1, args.queries // 50))
    _, idx = knn(queries[rows], references, 1)
    assert (idx[:, 0] == (queries[rows] @ references.T).argmax(axis=1)).all()


if __name__ == "__main__":
    main()
