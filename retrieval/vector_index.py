"""A FAISS inner-product index over unit vectors, keyed by caller-given int64 ids.

Exact search (`IndexFlatIP` inside `IndexIDMap2`) below `exact_threshold` vectors; at or above it an
IVF-Flat index with `nlist` ≈ 4·√n. `nprobe` = 64 was chosen with `benchmarks/search_speed.py`: on
diffuse synthetic data (50 broad clusters) nprobe 16 gave recall@10 0.71 at 1M vectors, 32 gave 0.92,
64 gave 0.997 at a p50 of about 1 ms on two cores. The switch happens by itself as vectors are added.
IVF is preferred over HNSW because it supports deletion (`remove_ids`). Files are written atomically
(temporary file, fsync, rename).

Id filters (`allowed_ids`, `excluded_ids`) run inside FAISS through `IDSelectorBatch` /
`IDSelectorNot`; small allowed sets are searched exactly, and IVF searches that come back short of
k results are widened (more lists probed) so a selective filter cannot silently empty a result.

With `IndexParams.device` resolving to a GPU and a FAISS build that has GPU support, searches
without an allowed-id filter and IVF training run on the GPU (`faiss_gpu.py`); the index stays in
the CPU format either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kgreport.errors import Unavailable
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.faiss_gpu import MAX_GPU_K, GpuMirror, train_ivf, use_gpu

EXACT_SUBSET_MAX = 4096  # allowed-id sets up to this size are searched exactly (brute force)
MIN_POINTS_PER_LIST = 39  # FAISS k-means wants ≥ 39 training points per centroid
SINGLE_THREAD_QUERIES = 8  # searches of up to this many queries run on the calling thread alone
WIDEN_FACTOR = 8  # IVF searches short of k results retry with nprobe × this, up to nlist
_HASHTABLE: int = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]  # (missing from faiss's stubs)


@contextmanager
def _threads_for(n_queries: int) -> Iterator[None]:
    """One OpenMP thread for a handful of queries, restored afterwards.

    A FAISS search otherwise opens a parallel region whose idle threads spin against the encoders'
    threads and, in the service, other requests: on 2 cores a one-query search of a 119-vector index
    took about 7 ms instead of 0.1 ms. OpenMP keeps this setting per thread, so no other thread sees it.
    """
    if n_queries > SINGLE_THREAD_QUERIES:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class VectorIndexError(Unavailable, ValueError):
    """A vector of the wrong size, a duplicate id, or an unreadable index file."""

    code = "vector_index_unreadable"


def auto_nlist(n: int) -> int:
    """IVF list count for n vectors: ≈ 4·√n, clamped to [16, 65536]."""
    return int(np.clip(round(4 * np.sqrt(max(n, 1))), 16, 65536))


def _as_ids(ids: Any) -> np.ndarray:
    out = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).ravel())
    if (out < 0).any():
        raise VectorIndexError("ids must be non-negative (-1 marks a missing result)")
    return out


def _as_unit_matrix(vectors: Any, dim: int) -> np.ndarray:
    """float32 rows of length `dim`, L2-normalised (zero rows stay zero) so inner product is cosine."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        got = matrix.shape[-1] if matrix.ndim == 2 else matrix.shape
        raise VectorIndexError(f"vectors have dimension {got}, the index expects {dim}")
    if not np.isfinite(matrix).all():
        raise VectorIndexError("vectors contain NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.where(norms > 0, norms, 1), dtype=np.float32)


def _padding(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


class VectorIndex:
    """Cosine similarity search with add, remove, id-filtered search and atomic persistence."""

    def __init__(self, dim: int, params: IndexParams | None = None) -> None:
        if dim <= 0:
            raise VectorIndexError(f"dimension must be positive, got {dim}")
        self._dim = int(dim)
        self.params = params or IndexParams()
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))
        self._kind = "flat"
        self._gpu = GpuMirror() if use_gpu(self.params.device) else None
        # Sorted copy of the stored ids: O(log n) membership checks without asking FAISS.
        self._sorted_ids = np.zeros(0, dtype=np.int64)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        """ "flat" (exact) or "ivf" (approximate)."""
        return self._kind

    def __len__(self) -> int:
        return int(self._index.ntotal)

    # -- ids -------------------------------------------------------------------------------------
    def _stored_ids(self) -> np.ndarray:
        """Ids in FAISS storage order (for flat: the row order of the vectors)."""
        if self._kind == "flat":
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        lists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(self._index.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def contains(self, ids: Any) -> np.ndarray:
        """Boolean mask: which of `ids` are stored."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(self._sorted_ids) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return self._sorted_ids[pos] == ids

    def ids(self) -> np.ndarray:
        """All stored ids, ascending."""
        return self._sorted_ids.copy()

    # -- writes ----------------------------------------------------------------------------------
    def add(self, ids: Any, vectors: Any) -> None:
        """Store vectors under ids (normalised first); switches to IVF once the size reaches the threshold."""
        ids = _as_ids(ids)
        matrix = _as_unit_matrix(vectors, self._dim)
        if len(ids) != len(matrix):
            raise VectorIndexError(f"{len(ids)} ids for {len(matrix)} vectors")
        if len(ids) == 0:
            return
        new = np.sort(ids)
        if (np.diff(new) == 0).any() or self.contains(new).any():
            raise VectorIndexError("duplicate ids: an id can be stored once")
        self._index.add_with_ids(matrix, ids)
        self._changed()
        self._sorted_ids = np.insert(self._sorted_ids, np.searchsorted(self._sorted_ids, new), new)
        if self._kind == "flat" and len(self) >= self.params.exact_threshold:
            self.rebuild("ivf")

    def remove(self, ids: Any) -> int:
        """Delete these ids (unknown ones are ignored); returns how many were removed."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        ids = np.ascontiguousarray(ids[self.contains(ids)])
        if len(ids) == 0:
            return 0
        # The IVF hash-table direct map only accepts IDSelectorArray; IDMap2 prefers the hashed batch.
        selector = faiss.IDSelectorArray(ids) if self._kind == "ivf" else faiss.IDSelectorBatch(ids)
        removed = int(self._index.remove_ids(selector))
        self._changed()
        self._sorted_ids = np.delete(self._sorted_ids, np.searchsorted(self._sorted_ids, ids))
        return removed

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (ids, unit vectors), in storage order."""
        ids = self._stored_ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self._dim), dtype=np.float32)
        if self._kind == "flat":  # rows of the flat store are in id-map order: one copy, no lookups
            inner: Any = faiss.downcast_index(self._index.index)
            flat = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * self._dim)
            return ids, flat.reshape(-1, self._dim).copy()
        return ids, self._index.reconstruct_batch(ids)

    def train(self, sample: np.ndarray, expected_size: int | None = None) -> None:
        """Turn this empty index into an IVF index trained on `sample`, sized for `expected_size` vectors.

        Lets a caller that streams vectors (a rebuild from a database) train once on a sample
        instead of switching structure part-way through.
        """
        if len(self):
            raise VectorIndexError("train() needs an empty index; use rebuild('ivf') on a filled one")
        self._index, self._kind = self._trained_ivf(_as_unit_matrix(sample, self._dim), expected_size), "ivf"
        self._changed()

    def _changed(self) -> None:
        """After every write: the GPU copy, if any, no longer matches."""
        if self._gpu is not None:
            self._gpu.invalidate()

    def _trained_ivf(self, vectors: np.ndarray, expected_size: int | None) -> Any:
        if len(vectors) == 0:
            raise VectorIndexError("an IVF index needs vectors to train on")
        rng = np.random.default_rng(0)  # a fixed sample: the same data gives the same index
        n_train = min(len(vectors), self.params.train_sample)
        sample = vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))]
        nlist = self.params.nlist or auto_nlist(expected_size or len(vectors))
        nlist = max(1, min(nlist, n_train // MIN_POINTS_PER_LIST))  # too few points per list trains badly
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self._dim), self._dim, nlist, faiss.METRIC_INNER_PRODUCT)
        if self._gpu is not None:
            train_ivf(ivf, sample)
        else:
            ivf.train(sample)
        ivf.nprobe = min(self.params.nprobe, nlist)
        # IVF stores our ids itself; a hash-table direct map keeps reconstruct(id) working after
        # remove_ids(). (IndexIDMap2 around IVF would also work but doubles the id bookkeeping.)
        ivf.set_direct_map_type(_HASHTABLE)
        return ivf

    def rebuild(self, kind: str | None = None) -> None:
        """Re-create the structure ("flat" or "ivf"; default: what the size calls for) from stored vectors."""
        ids, vectors = self.vectors()
        kind = kind or ("ivf" if len(ids) >= self.params.exact_threshold else "flat")
        if kind == "flat":
            index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))
        elif kind == "ivf":
            index = self._trained_ivf(vectors, len(ids))
        else:
            raise VectorIndexError(f"unknown index kind {kind!r} (expected 'flat' or 'ivf')")
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index, self._kind = index, kind
        self._changed()

    # -- search ----------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        excluded_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k), best first; missing results are id -1 with score -inf.

        `allowed_ids`: search only these ids; `excluded_ids`: never return these.
        """
        matrix = _as_unit_matrix(queries, self._dim)
        k = max(int(k), 0)
        excluded = None
        if excluded_ids is not None and len(excluded_ids):
            excluded = np.unique(_as_ids(excluded_ids))
            excluded = excluded[self.contains(excluded)]
        if allowed_ids is not None:
            allowed = np.unique(_as_ids(allowed_ids))
            allowed = allowed[self.contains(allowed)]
            if excluded is not None:
                allowed = np.setdiff1d(allowed, excluded, assume_unique=True)
            if len(allowed) == 0 or k == 0:
                return _padding(len(matrix), k)
            if len(allowed) <= EXACT_SUBSET_MAX:
                return self._search_subset(matrix, k, allowed)
            return self._search_faiss(matrix, k, faiss.IDSelectorBatch(allowed), len(allowed))
        available = len(self) - (0 if excluded is None else len(excluded))
        if available <= 0 or k == 0:
            return _padding(len(matrix), k)
        selector = None if excluded is None else faiss.IDSelectorNot(faiss.IDSelectorBatch(excluded))
        if self._gpu is not None and k + (0 if excluded is None else len(excluded)) <= MAX_GPU_K:
            return self._search_gpu(self._gpu, matrix, k, excluded, selector, available)
        return self._search_faiss(matrix, k, selector, available)

    def _search_gpu(
        self, gpu: GpuMirror, queries: np.ndarray, k: int, excluded: np.ndarray | None, selector: Any, available: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search the GPU copy; rows it leaves short of k (IVF lists too few) go through the CPU search."""
        nprobe = min(self.params.nprobe, int(self._index.nlist)) if self._kind == "ivf" else None
        scores, ids = gpu.search(self._index, queries, k, excluded, nprobe)
        short = (ids >= 0).sum(axis=1) < min(k, available)
        if short.any():
            scores[short], ids[short] = self._search_faiss(queries[short], k, selector, available)
        return self._clean(scores, ids)

    def _search_faiss(
        self, queries: np.ndarray, k: int, selector: Any, available: int
    ) -> tuple[np.ndarray, np.ndarray]:
        with _threads_for(len(queries)):
            return self._search_faiss_unthreaded(queries, k, selector, available)

    def _search_faiss_unthreaded(
        self, queries: np.ndarray, k: int, selector: Any, available: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._kind == "flat":
            # IndexIDMap2 wraps the selector in IDSelectorTranslated, so it sees our ids, not row numbers.
            params = None
            if selector is not None:
                params = faiss.SearchParameters()
                params.sel = selector
            scores, ids = self._index.search(queries, k, params=params)
            return self._clean(scores, ids)
        nlist = int(self._index.nlist)
        nprobe = min(self.params.nprobe, nlist)
        scores, ids = self._search_ivf(queries, k, selector, nprobe)
        want = min(k, available)
        short = (ids >= 0).sum(axis=1) < want
        # A selective filter or a large k can leave the probed lists short of k results: probe more.
        while short.any() and nprobe < nlist:
            nprobe = min(nlist, nprobe * WIDEN_FACTOR)
            scores[short], ids[short] = self._search_ivf(queries[short], k, selector, nprobe)
            short = (ids >= 0).sum(axis=1) < want
        return self._clean(scores, ids)

    def _search_ivf(self, queries: np.ndarray, k: int, selector: Any, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if selector is not None:
            params.sel = selector
        return self._index.search(queries, k, params=params)

    @staticmethod
    def _clean(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = ids.astype(np.int64)
        return np.where(ids < 0, -np.inf, scores).astype(np.float32), ids

    def _search_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over a small set of stored ids: IVF would only see those in its probed lists."""
        scores, ids = _padding(len(queries), k)
        sims = queries @ self._index.reconstruct_batch(allowed).T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        n = order.shape[1]
        scores[:, :n] = np.take_along_axis(sims, order, axis=1)
        ids[:, :n] = allowed[order]
        return scores, ids

    # -- size and persistence -----------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Roughly what the index holds in RAM: vectors, ids, id maps and (IVF) centroids."""
        n = len(self)
        total = n * (self._dim * 4 + 8)  # vectors + stored ids
        total += n * 8  # our sorted id copy
        total += n * 40  # IDMap2 reverse map or IVF direct-map hash table (std::unordered_map entries)
        if self._kind == "ivf":
            total += int(self._index.nlist) * self._dim * 4  # centroids
        return int(total)

    def save(self, path: Path) -> None:
        """Write to `path` atomically: a crash leaves the old file or the new one, never half of one."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path, params: IndexParams | None = None) -> VectorIndex:
        """Read an index written by `save`; a missing, truncated or foreign file raises VectorIndexError."""
        path = Path(path)
        if not path.is_file():
            raise VectorIndexError(f"{path}: no such index file")
        try:
            index: Any = faiss.read_index(str(path))
        except RuntimeError as err:
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            raise VectorIndexError(f"{path}: not a readable FAISS index ({first_line})") from err
        self = cls(index.d, params)
        if isinstance(index, faiss.IndexIVFFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT:
            if index.direct_map.type != _HASHTABLE:
                index.set_direct_map_type(_HASHTABLE)  # reconstruct() needs it
            index.nprobe = min(self.params.nprobe, index.nlist)
            self._index, self._kind = index, "ivf"
        elif isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlatIP):
            self._index, self._kind = index, "flat"
        else:
            raise VectorIndexError(f"{path}: unexpected FAISS index type {type(index).__name__}")
        self._sorted_ids = np.sort(self._stored_ids())
        return self


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
