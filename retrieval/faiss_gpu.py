"""FAISS on a GPU, when this FAISS build has GPU support and a GPU is visible: search and IVF training.

The index itself always stays a CPU index. That is what is saved, so a file written on a GPU machine
opens on a CPU-only one and back. The GPU holds a copy made for searching (dropped at the next write)
and runs the k-means that trains IVF centroids. faiss-cpu, the default install, has no GPU support;
the `kgreport[gpu]` extra replaces it with faiss-gpu (which needs the CUDA 12 runtime and cuBLAS 12).

GPU indexes take no id selector, so a search that excludes ids asks the copy for `k + len(excluded)`
results and drops the excluded ones; searches restricted to allowed ids stay on the CPU.
"""

from __future__ import annotations

import logging
import threading
from functools import cache, lru_cache
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

MAX_GPU_K = 2048  # FAISS GPU's largest k and nprobe (GPU_MAX_SELECTION_K)


def gpu_support() -> bool:
    """True when this FAISS build has GPU code and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


@cache
def use_gpu(device: str) -> bool:
    """Whether FAISS work runs on the GPU for this `KGREPORT_DEVICE` value (auto, cpu, cuda).

    `cuda` with a CPU-only FAISS is not an error: the encoders and the writer still use the GPU, and
    vector search stays on the CPU, which is said once in the log.
    """
    if device == "cpu":
        return False
    available = gpu_support()
    if device == "cuda" and not available:
        log.warning(
            "KGREPORT_DEVICE=cuda, but this FAISS has no GPU support: vector search stays on the CPU "
            "(install the kgreport[gpu] extra for faiss-gpu)"
        )
    return available


def describe(device: str) -> str:
    """ "gpu" or "cpu": where vector search runs, for start-up logs and the readiness answer."""
    return "gpu" if use_gpu(device) else "cpu"


@lru_cache(maxsize=1)
def _resources() -> Any:
    """One set of GPU buffers (cuBLAS handle, scratch memory) for the whole process."""
    return faiss.StandardGpuResources()


def train_ivf(ivf: Any, sample: np.ndarray) -> None:
    """Train a CPU IVF index with its k-means assignments on the GPU; the index stays a CPU index.

    FAISS trains the coarse quantizer through `clustering_index` when one is set (same spherical
    k-means, same centroids count); the GPU copy is detached afterwards so none is saved or kept.
    """
    assigner = faiss.index_cpu_to_gpu(_resources(), 0, faiss.IndexFlatIP(ivf.d))
    ivf.clustering_index = assigner
    try:
        ivf.train(sample)
    finally:
        ivf.clustering_index = None


class GpuMirror:
    """A GPU copy of one CPU index, made at the first search after a write and dropped by `invalidate`."""

    def __init__(self) -> None:
        self._copy: Any = None
        self._lock = threading.Lock()  # FAISS GPU indexes are not safe for concurrent searches

    def invalidate(self) -> None:
        with self._lock:
            self._copy = None

    def search(
        self, index: Any, queries: np.ndarray, k: int, excluded: np.ndarray | None, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) from the GPU copy of `index`, excluded ids removed; rows may come back short."""
        fetch = min(k + (0 if excluded is None else len(excluded)), int(index.ntotal))
        with self._lock:
            if self._copy is None:
                self._copy = faiss.index_cpu_to_gpu(_resources(), 0, index)
            params = None
            if nprobe is not None:
                params = faiss.SearchParametersIVF()
                params.nprobe = min(nprobe, MAX_GPU_K)
            scores, ids = self._copy.search(queries, fetch, params=params)
        if excluded is not None:
            ids = np.where(np.isin(ids, excluded), -1, ids)
        return _first_k(scores, ids.astype(np.int64), k)


def _first_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k results that are not -1, best first, padded with (-inf, -1)."""
    keep = ids >= 0
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, their order unchanged
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.where(ids >= 0, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores, ids
