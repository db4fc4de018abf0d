"""A FAISS inner-product index over unit vectors, keyed by caller-given int64 ids.

Exact search (`IndexFlatIP`) below `exact_threshold` vectors; above it an IVF-Flat index whose
`nlist` ≈ 4·√n and `nprobe` were chosen with `benchmarks/search_speed.py` (recall@10 ≥ 0.95 at
1M clustered vectors). The switch happens by itself as vectors are added. IVF is preferred over
HNSW here because it supports deletion (`remove_ids`) and builds a 1M index in under a minute on
two cores. Files are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np


@dataclass
class IndexParams:
    """Search-structure choices; every one can be overridden through the settings."""

    exact_threshold: int = 20_000
    nlist: int | None = None
    nprobe: int = 16
    train_sample: int = 100_000


EXACT_SUBSET_MAX = 4096  # filtered searches over at most this many ids are exact (brute force)


class VectorIndexError(ValueError):
    """A vector of the wrong size, a duplicate id, or an unreadable index file."""


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    matrix = np.ascontiguousarray(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
    if matrix.shape[1] != dim:
        raise VectorIndexError(f"vectors have dimension {matrix.shape[1]}, the index expects {dim}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1)


def auto_nlist(n: int) -> int:
    return int(np.clip(4 * np.sqrt(max(n, 1)), 16, 65536))


class VectorIndex:
    """Cosine similarity search with add, remove, filtered search and atomic persistence."""

    def __init__(self, dim: int, params: IndexParams | None = None) -> None:
        self.dim = dim
        self.params = params or IndexParams()
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.kind = "flat"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _ids(self) -> np.ndarray:
        if self.kind == "flat":
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        lists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(self._index.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(ids, dtype=np.int64), self._ids())

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).ravel())
        matrix = _as_matrix(vectors, self.dim)
        if len(ids) != len(matrix):
            raise VectorIndexError(f"{len(ids)} ids for {len(matrix)} vectors")
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids) or self.contains(ids).any():
            raise VectorIndexError("duplicate ids: an id can be stored once")
        self._index.add_with_ids(matrix, ids)
        if self.kind == "flat" and len(self) >= self.params.exact_threshold:
            self.rebuild("ivf")

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (ids, vectors)."""
        ids = self._ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), dtype=np.float32)
        if self.kind == "flat":  # rows of the flat store are in id-map order
            inner: Any = faiss.downcast_index(self._index.index)
            return ids, faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * self.dim).reshape(-1, self.dim).copy()
        return ids, self._index.reconstruct_batch(ids)

    def rebuild(self, kind: str | None = None) -> None:
        """Re-create the structure ("flat" or "ivf"; default: what the size calls for) from stored vectors."""
        ids, vectors = self.vectors()
        kind = kind or ("ivf" if len(ids) >= self.params.exact_threshold else "flat")
        if kind == "flat":
            index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif kind == "ivf":
            nlist = min(self.params.nlist or auto_nlist(len(ids)), max(1, len(ids) // 39))
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(len(vectors), min(len(vectors), self.params.train_sample), replace=False)]
            ivf.train(sample)
            ivf.nprobe = self.params.nprobe
            # IVF stores our ids itself; a hash-table direct map keeps reconstruct(id) working after
            # remove_ids(). (Wrapped in IndexIDMap2 it could not remove: the hash map wants id arrays.)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            index = ivf
        else:
            raise VectorIndexError(f"unknown index kind {kind!r}")
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index, self.kind = index, kind

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) == 0:
            return 0
        if self.kind == "ivf":
            ids = ids[self.contains(ids)]
            return int(self._index.remove_ids(faiss.IDSelectorArray(ids))) if len(ids) else 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        excluded_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing results are id -1 with score -inf."""
        matrix = _as_matrix(queries, self.dim)
        if len(self) == 0 or k <= 0:
            return (
                np.full((len(matrix), max(k, 0)), -np.inf, dtype=np.float32),
                np.full((len(matrix), max(k, 0)), -1, dtype=np.int64),
            )
        if allowed_ids is not None and len(allowed_ids) <= EXACT_SUBSET_MAX:
            return self._search_subset(matrix, k, np.asarray(allowed_ids, dtype=np.int64), excluded_ids)
        selector = self._selector(allowed_ids, excluded_ids)
        if self.kind == "ivf":
            params: Any = faiss.SearchParametersIVF(nprobe=self.params.nprobe)  # type: ignore[call-arg]
            if selector is not None:
                params.sel = selector
        else:
            params = faiss.SearchParameters()
            if selector is not None:
                params.sel = selector
        scores, ids = self._index.search(matrix, k, params=params)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _search_subset(
        self, queries: np.ndarray, k: int, allowed: np.ndarray, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over a small allowed set: IVF would only see the ids in its probed lists."""
        allowed = np.unique(allowed[self.contains(allowed)])
        if excluded is not None and len(excluded):
            allowed = allowed[~np.isin(allowed, np.asarray(excluded, dtype=np.int64))]
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if len(allowed) == 0:
            return scores, ids
        vectors = self._index.reconstruct_batch(allowed)
        sims = queries @ vectors.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        n = order.shape[1]
        scores[:, :n] = np.take_along_axis(sims, order, axis=1)
        ids[:, :n] = allowed[order]
        return scores, ids

    @staticmethod
    def _selector(allowed: np.ndarray | None, excluded: np.ndarray | None) -> Any:
        # IVF stores our ids and IndexIDMap2 translates selectors onto them: either way, these are our ids.
        sel: Any = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(np.asarray(allowed, dtype=np.int64)))
        if excluded is not None and len(excluded):
            not_sel = faiss.IDSelectorNot(
                faiss.IDSelectorBatch(np.ascontiguousarray(np.asarray(excluded, dtype=np.int64)))
            )
            sel = not_sel if sel is None else faiss.IDSelectorAnd(sel, not_sel)
        return sel

    def memory_bytes(self) -> int:
        """Vectors, ids and (IVF) centroids: what the index holds in RAM, roughly."""
        n = len(self)
        total = n * (self.dim * 4 + 8 * 2)
        if self.kind == "ivf":
            total += self._index.nlist * self.dim * 4 + n * 16  # centroids + direct-map hash
        return int(total)

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, params: IndexParams | None = None) -> VectorIndex:
        path = Path(path)
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise VectorIndexError(f"{path}: not a readable FAISS index ({str(err).splitlines()[0][:200]})") from err
        self = cls(index.d, params)
        if isinstance(index, faiss.IndexIVF):
            self._index, self.kind = index, "ivf"
            index.nprobe = self.params.nprobe
        elif isinstance(index, faiss.IndexIDMap2):
            self._index, self.kind = index, "flat"
        else:
            raise VectorIndexError(f"{path}: unexpected FAISS index type {type(index).__name__}")
        return self
