"""Real FAISS on small synthetic data: exact vs IVF, deletes, filtered search, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.vector_index import IndexParams, VectorIndex, VectorIndexError


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


def test_exact_search_equals_brute_force() -> None:
    x = clustered(300)
    ids = np.arange(300, dtype=np.int64) * 7 + 3
    index = VectorIndex(32)
    index.add(ids, x)
    scores, found = index.search(x[:10], 5)
    assert index.kind == "flat"
    assert np.array_equal(found, brute_force(x, ids, x[:10], 5))
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_switches_to_ivf_past_threshold_with_good_recall() -> None:
    x = clustered(3000)
    ids = np.arange(3000, dtype=np.int64)
    index = VectorIndex(32, IndexParams(exact_threshold=1000, nprobe=8))
    index.add(ids[:900], x[:900])
    assert index.kind == "flat"
    index.add(ids[900:], x[900:])
    assert index.kind == "ivf" and len(index) == 3000
    queries = clustered(50, seed=1)
    truth = brute_force(x, ids, queries, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.9


@pytest.mark.parametrize("threshold", [10_000, 500])
def test_remove_and_filters_on_flat_and_ivf(threshold: int) -> None:
    x = clustered(1200)
    ids = np.arange(1200, dtype=np.int64) + 100
    index = VectorIndex(32, IndexParams(exact_threshold=threshold))
    index.add(ids, x)
    assert index.search(x[:1], 1)[1][0, 0] == 100
    assert index.remove(np.array([100, 101, 999_999])) == 2
    assert len(index) == 1198
    assert 100 not in index.search(x[:1], 10)[1]
    allowed = np.array([105, 400, 900, 100])
    _, found = index.search(x[:1], 5, allowed_ids=allowed)
    assert set(found[0][found[0] >= 0]) == {105, 400, 900}
    _, found = index.search(x[2:3], 5, excluded_ids=np.array([102]))
    assert 102 not in found[0] and (found[0] >= 0).all()
    with pytest.raises(VectorIndexError, match="duplicate ids"):
        index.add(np.array([105]), x[:1])
    with pytest.raises(VectorIndexError, match="dimension 16, the index expects 32"):
        index.add(np.array([5]), np.ones((1, 16)))


def test_save_load_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    for threshold in (10_000, 500):
        x = clustered(1000)
        index = VectorIndex(32, IndexParams(exact_threshold=threshold))
        index.add(np.arange(1000), x)
        index.save(tmp_path / "v.faiss")
        loaded = VectorIndex.load(tmp_path / "v.faiss")
        assert loaded.kind == index.kind and len(loaded) == 1000
        assert np.array_equal(loaded.search(x[:5], 5)[1], index.search(x[:5], 5)[1])
        ids, vectors = loaded.vectors()
        assert np.allclose(vectors[np.argsort(ids)], x, atol=1e-6)
    (tmp_path / "bad.faiss").write_bytes((tmp_path / "v.faiss").read_bytes()[:500])
    with pytest.raises(VectorIndexError, match="bad.faiss"):
        VectorIndex.load(tmp_path / "bad.faiss")


def test_empty_index_returns_padding() -> None:
    scores, ids = VectorIndex(8).search(np.ones((2, 8)), 3)
    assert (ids == -1).all() and np.isinf(scores).all()
