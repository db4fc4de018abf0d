"""FAISS on a GPU: the guard on every machine, the GPU search and training where faiss-gpu sees a GPU.

On a CPU-only machine (CI) the GPU tests are skipped and the guard tests check that asking for CUDA
leaves FAISS on the CPU with the same results and the same files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import pytest

from kgreport.retrieval import faiss_gpu
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.faiss_gpu import _first_k, gpu_support, use_gpu
from kgreport.retrieval.vector_index import VectorIndex
from tests.retrieval.test_vector_index import DIM, brute_force, clustered, recall

needs_gpu_faiss = pytest.mark.skipif(not gpu_support(), reason="needs faiss-gpu and a CUDA GPU")


@pytest.fixture(autouse=True)
def _fresh_guard() -> None:
    use_gpu.cache_clear()  # the guard logs once per process; each test sees it anew


def test_cpu_is_always_cpu_and_auto_follows_the_faiss_build() -> None:
    assert use_gpu("cpu") is False
    assert use_gpu("auto") is gpu_support()
    assert faiss_gpu.describe("cpu") == "cpu"


@pytest.mark.skipif(gpu_support(), reason="checks a CPU-only FAISS")
def test_cuda_with_cpu_only_faiss_stays_on_cpu_and_says_so(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="kgreport.retrieval.faiss_gpu"):
        assert use_gpu("cuda") is False
    assert "no GPU support" in caplog.text and "kgreport[gpu]" in caplog.text
    x, _ = clustered(900)
    ids = np.arange(900, dtype=np.int64)
    asked = VectorIndex(DIM, IndexParams(exact_threshold=600, device="cuda"))
    plain = VectorIndex(DIM, IndexParams(exact_threshold=600))
    for index in (asked, plain):
        index.add(ids, x)
    assert asked.kind == "ivf"
    asked_hits = asked.search(x[:20], 5, excluded_ids=ids[:3])
    plain_hits = plain.search(x[:20], 5, excluded_ids=ids[:3])
    assert all(np.array_equal(a, b) for a, b in zip(asked_hits, plain_hits, strict=True))
    asked.save(tmp_path / "a.faiss")
    plain.save(tmp_path / "b.faiss")
    assert (tmp_path / "a.faiss").read_bytes() == (tmp_path / "b.faiss").read_bytes()


def test_first_k_drops_excluded_results_and_pads() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2]], dtype=np.float32)
    ids = np.array([[7, -1, 5, 4], [-1, -1, -1, 9]], dtype=np.int64)
    got_scores, got_ids = _first_k(scores, ids, 3)
    assert got_ids.tolist() == [[7, 5, 4], [9, -1, -1]]
    assert got_scores[0].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert got_scores[1, 0] == pytest.approx(0.2) and np.isneginf(got_scores[1, 1:]).all()
    wide_scores, wide_ids = _first_k(scores[:, :2], ids[:, :2], 4)  # fewer results than k: padded
    assert wide_ids.tolist() == [[7, -1, -1, -1], [-1, -1, -1, -1]] and wide_scores.shape == (2, 4)


@needs_gpu_faiss
def test_gpu_flat_search_equals_cpu_with_exclusions() -> None:
    x, _ = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) * 3 + 1
    index = VectorIndex(DIM, IndexParams(device="cuda"))
    index.add(ids, x)
    excluded = ids[:50:2]
    scores, found = index.search(x[:64], 10, excluded_ids=excluded)
    keep = ~np.isin(ids, excluded)
    truth_scores, truth = brute_force(x[keep], ids[keep], x[:64], 10)
    assert not np.isin(found, excluded).any()
    assert recall(found, truth) >= 0.99  # float ties may swap places between CPU and GPU
    assert np.allclose(scores, truth_scores, atol=1e-4)
    index.remove(ids[100:200])  # a write drops the GPU copy: removed ids are never returned
    _, after = index.search(x[100:200], 5)
    assert not np.isin(after, ids[100:200]).any()


@needs_gpu_faiss
def test_gpu_trained_ivf_is_saved_in_cpu_format(tmp_path: Path) -> None:
    x, _ = clustered(6000)
    ids = np.arange(6000, dtype=np.int64)
    index = VectorIndex(DIM, IndexParams(exact_threshold=4000, device="cuda"))
    index.add(ids, x)
    assert index.kind == "ivf"
    _, gpu_found = index.search(x[:100], 10)
    index.save(tmp_path / "ivf.faiss")
    assert isinstance(faiss.read_index(str(tmp_path / "ivf.faiss")), faiss.IndexIVFFlat)
    on_cpu = VectorIndex.load(tmp_path / "ivf.faiss", IndexParams(device="cpu"))
    _, cpu_found = on_cpu.search(x[:100], 10)
    _, truth = brute_force(x, ids, x[:100], 10)
    assert recall(gpu_found, truth) >= 0.95 and recall(cpu_found, truth) >= 0.95
    assert recall(gpu_found, cpu_found) >= 0.99
