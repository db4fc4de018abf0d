"""Search speed and recall at 10k / 100k / 1M stored vectors: kgreport's VectorIndex vs plain IndexFlatIP.

Synthetic vectors with cluster structure (a mixture of Gaussians on the unit sphere, like real
embeddings; uniform random vectors have no neighbours worth finding and make every ANN look bad).
Single-query latency (one query per call, as the service answers), p50 / p95 over the query set,
recall@10 against exact search, build time and memory, and an nprobe sweep that justifies the
default. Both indexes are measured side by side in one process.

With `--device cuda` (or auto) and faiss-gpu installed, kgreport's index searches and trains on the GPU
(`retrieval/faiss_gpu.py`); the plain IndexFlatIP beside it stays on the CPU.

Usage: python -m kgreport.benchmarks.search_speed [--sizes 10000 100000 1000000] [--queries 300] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.retrieval import faiss_gpu
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.vector_index import VectorIndex

DIM = 256


def clustered_vectors(
    n: int, dim: int, rng: np.random.Generator, n_clusters: int = 2000, spread: float = 0.6
) -> np.ndarray:
    """Unit vectors around `n_clusters` random centres; `spread` sets within-cluster cosine (≈0.7)."""
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, n_clusters, stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (spread / np.sqrt(dim))
        block = centres[labels] + noise
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def latencies_ms(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids, times = [], []
    for q in queries:
        t = time.perf_counter()
        _, found = search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1000)
        ids.append(found[0])
    return np.asarray(times), np.asarray(ids)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def bench_size(
    n: int,
    n_queries: int,
    rng: np.random.Generator,
    sweep: list[int],
    clusters: int,
    spread: float,
    device: str = "cpu",
) -> dict:
    data = clustered_vectors(n + n_queries, DIM, rng, n_clusters=clusters, spread=spread)
    vectors, queries = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)

    t = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    flat_build = time.perf_counter() - t
    flat_ms, truth = latencies_ms(flat.search, queries, 10)

    t = time.perf_counter()
    index = VectorIndex(DIM, IndexParams(device=device))
    index.add(ids, vectors)
    build = time.perf_counter() - t
    ours_ms, found = latencies_ms(index.search, queries, 10)
    row: dict[str, Any] = {
        "n": n,
        "kind": index.kind,
        "nprobe": index.params.nprobe,
        "build_seconds": round(build, 2),
        "flat_build_seconds": round(flat_build, 2),
        "p50_ms": round(float(np.median(ours_ms)), 3),
        "p95_ms": round(float(np.percentile(ours_ms, 95)), 3),
        "flat_p50_ms": round(float(np.median(flat_ms)), 3),
        "flat_p95_ms": round(float(np.percentile(flat_ms, 95)), 3),
        "speedup_p50_vs_flat": round(float(np.median(flat_ms) / np.median(ours_ms)), 2),
        "recall_at_10": round(recall_at_k(found, truth), 4),
        "memory_mb": round(index.memory_bytes() / 2**20, 1),
        "flat_memory_mb": round(n * DIM * 4 / 2**20, 1),
    }
    if index.kind == "ivf":
        row["nprobe_sweep"] = []
        for nprobe in sweep:
            index.params.nprobe = nprobe
            ms, f = latencies_ms(index.search, queries, 10)
            row["nprobe_sweep"].append(
                {
                    "nprobe": nprobe,
                    "p50_ms": round(float(np.median(ms)), 3),
                    "recall_at_10": round(recall_at_k(f, truth), 4),
                }
            )
        index.params.nprobe = row["nprobe"]
    del flat, index, vectors
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--sweep", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--clusters", type=int, default=1000, help="Gaussian centres of the synthetic data")
    parser.add_argument(
        "--spread",
        type=float,
        default=1.5,
        help="noise scale: 1.5 gives within-cluster cosine ≈ 0.3, so a cluster's thousand members "
        "are near-ties and IVF must probe enough lists to rank them",
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where kgreport's FAISS runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_speed.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        row = bench_size(n, args.queries, rng, args.sweep, args.clusters, args.spread, args.device)
        rows.append(row)
        print(
            f"n={n:>9,} {row['kind']:>4}  p50 {row['p50_ms']:.3f} ms  p95 {row['p95_ms']:.3f} ms  "
            f"recall@10 {row['recall_at_10']:.3f}  | flat p50 {row['flat_p50_ms']:.3f} ms  "
            f"(x{row['speedup_p50_vs_flat']})  mem {row['memory_mb']} MB  build {row['build_seconds']} s",
            flush=True,
        )
        for s in row.get("nprobe_sweep", []):
            print(f"      nprobe {s['nprobe']:>3}: p50 {s['p50_ms']:.3f} ms, recall@10 {s['recall_at_10']:.3f}")
    result = {
        "benchmark": "search_speed",
        "dim": DIM,
        "synthetic": {"clusters": args.clusters, "spread": args.spread, "queries": args.queries},
        "faiss": faiss.__version__,
        "vector_search": faiss_gpu.describe(args.device),
        "results": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
