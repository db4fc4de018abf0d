"""Similar-case search: by image, by text, or both (weighted score fusion), with a leakage guard.

- Image query: the CT encoder's vector of the image (volumes: pooled slices) against stored images.
- Text query: the CT encoder's text tower against stored images, fused with the report-text
  encoder (MiniLM) against stored reports: score = w·clip + (1−w)·report, w = `text_clip_weight`.
- Image + text: score = w·image + (1−w)·report, w = `image_weight`.
Candidates come from the FAISS indexes (several times k); fused scores are then computed exactly
from the stored vectors, so a candidate found by one index is scored fairly by the other.

Image-only cases (indexed without a report) have no report to match or to be rescored by: a query with
text, and a search with `reported_only` (what a report writer drafts from), leaves them out by id, in
both indexes. A query with an image alone finds them like any other case (a hit with report "").

Options measured in `benchmarks.retrieval_quality` (all off by default unless the settings say):
- `query_expansion` M (image queries): the query vector plus its M best candidates' vectors, each
  weighted by its similarity cubed (alpha query expansion), rescores the candidates: neighbours that
  agree with each other rise, a lone look-alike sinks.
- `vote_by` "case": the modality / region / location vote counts each retrieved case once (its best
  image), so a case with many similar images does not outvote the rest.
- `case_pooling` (image queries without text): cases are ranked by the cosine of the query with the
  mean of all their images' vectors (as a volume's slices are pooled) rather than by their best image;
  the hit shows the case's best image.
- `head_weight` w: the predicted labels blend the encoder's own classifier heads (weight w) with the
  neighbours' vote (1 − w), for each label the encoder has a head for.
On MedPix none of them beat the defaults beyond the noise (README, "Retrieval: what we tried").

Leakage guard (on by default): a query never returns its own case or patient. The query's case is
recognised by its path (an image already in the store), by DICOM PatientID / StudyInstanceUID, or by
being a near-exact duplicate of a stored image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kgreport.errors import InvalidInput
from kgreport.retrieval.config import SearchConfig
from kgreport.retrieval.encoders.coalescing import QueryCoalescers
from kgreport.retrieval.encoders.image_encoder import ImageEncoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.encoders.volume_embedding import embed_decoded, pool_slices
from kgreport.retrieval.imaging import DecodedImage, ImageDecodeError, load_image
from kgreport.retrieval.query_cache import QueryCache, file_digest
from kgreport.retrieval.records import Hit, Prediction, SearchResult
from kgreport.retrieval.stores.interface import CaseStoreInterface
from kgreport.retrieval.stores.scope import SearchScope, check_filters
from kgreport.retrieval.voting import blend, vote_shares, winner

DUPLICATE_SCORE = 0.995  # cosine above which a stored image is taken to be the query image itself
VOTE_K = 10
EXPANSION_POWER = 3.0  # alpha of alpha query expansion: close neighbours count far more than far ones


class QueryError(InvalidInput):
    """A query that cannot be answered (no image and no text, unreadable or non-image file)."""

    code = "bad_query"


@dataclass(frozen=True)
class Query:
    """An image (2D file, DICOM file or series folder, NIfTI), a text, or both."""

    image: Path | None = None
    text: str | None = None

    @property
    def label(self) -> str:
        if self.image is not None and self.text:
            return f"{self.image} + text:{self.text}"
        return str(self.image) if self.image is not None else f"text:{self.text}"


@dataclass
class _Exclusions:
    case_ids: set[str]
    patient_ids: set[str]


class _Ranked(NamedTuple):
    """A candidate image after exact rescoring: its row id, fused score and case."""

    image_row: int
    score: float
    case_id: str


class CaseSearcher:
    """Answers queries against one case store with encoders loaded once."""

    def __init__(
        self,
        store: CaseStoreInterface,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        config: SearchConfig | None = None,
        *,
        cache: QueryCache | None = None,
        coalescers: QueryCoalescers | None = None,
    ) -> None:
        self.config = config or SearchConfig()
        self.store = store
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.cache = cache if cache is not None else QueryCache(0)  # shared by the caller; off by default
        self.coalescers = coalescers  # shared by the caller: one model thread per encoder (a service)

    # -- query encoding -------------------------------------------------------------------------
    def _decode(self, path: Path) -> DecodedImage:
        if not Path(path).exists():
            raise QueryError(f"{path}: query image not found")
        try:
            imaging = self.config.imaging
            decoded = load_image(path, max_pixels=imaging.max_pixels, volume_slices=imaging.volume_slices)
        except ImageDecodeError as err:
            raise QueryError(f"{path}: not a readable image ({err})") from err
        return _guess_hu(decoded)

    def embed_image(self, path: Path) -> tuple[np.ndarray, DecodedImage]:
        """The query image's vector and decoded pixels (from the cache when these bytes were seen)."""
        digest = file_digest(path) if self.cache.max_entries > 0 else None
        slices, window = self.config.imaging.volume_slices, self.config.imaging.window
        key = ("image", digest, slices, window)
        cached = self.cache.get(key) if digest else None
        if cached is not None:
            return cached
        decoded = self._decode(path)
        if self.coalescers is not None:
            vector = self.coalescers.images(slices, window)([decoded])[0]
        else:
            vector = embed_decoded(self.image_encoder, [decoded], k=slices, window=window)[0]
        vector.setflags(write=False)
        if digest:
            self.cache.put(key, (vector, decoded), nbytes=decoded.pixels.nbytes)
        return vector, decoded

    @property
    def text_dim(self) -> int:
        """Dimension of the stored report vectors (the text encoder's)."""
        return self.store.manifest.text_dim

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        """The stored report vectors of these cases, in order (zeros for unknown ids): what a report
        writer fuses with the image."""
        return self.store.case_text_vectors(case_ids)

    def embed_report_text(self, text: str) -> np.ndarray:
        """The text in the report space (MiniLM), cached by the exact string."""
        embed = self.coalescers.report_texts if self.coalescers else self.text_encoder.embed
        return self._cached_text("report", text, embed)

    def embed_clip_text(self, text: str) -> np.ndarray:
        """The text in the image space (the CT encoder's text tower), cached by the exact string."""
        embed = self.coalescers.clip_texts if self.coalescers else self.image_encoder.embed_texts
        return self._cached_text("clip", text, embed)

    def _cached_text(self, space: str, text: str, embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        cached = self.cache.get((space, text))
        if cached is not None:
            return cached
        vector = embed([text])[0]
        vector.setflags(write=False)
        self.cache.put((space, text), vector, nbytes=vector.nbytes + len(text))
        return vector

    # -- leakage guard --------------------------------------------------------------------------
    def _exclusions(
        self,
        query: Query,
        decoded: DecodedImage | None,
        vector: np.ndarray | None,
        case_ids: set[str],
        patient_ids: set[str],
    ) -> _Exclusions:
        excl = _Exclusions(set(case_ids), set(patient_ids))
        if query.image is not None:
            excl.case_ids |= self.store.case_ids_for_path(Path(query.image).resolve())
        if decoded is not None:
            meta = decoded.metadata or {}
            if meta.get("patient_id"):
                excl.patient_ids.add(str(meta["patient_id"]))
            if meta.get("study_uid"):
                excl.case_ids.add(str(meta["study_uid"]))
        if vector is not None:
            for hit in self.store.search_images(vector[None, :], 5)[0]:
                if hit.score >= DUPLICATE_SCORE:
                    excl.case_ids.add(hit.case_id)
        # A case's patient is excluded with it, so a second study of the same patient cannot leak.
        for case_id in list(excl.case_ids):
            patient = self.store.patient_of(case_id)
            if patient:
                excl.patient_ids.add(patient)
        return excl

    # -- search -----------------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        k: int | None = None,
        *,
        filters: Mapping[str, str] | None = None,
        exclude_case_ids: set[str] | None = None,
        exclude_patient_ids: set[str] | None = None,
        leakage_guard: bool | None = None,
        per_image: bool = False,
        embedded: tuple[np.ndarray, DecodedImage] | None = None,
        reported_only: bool = False,
    ) -> SearchResult:
        """Top-k hits (one per case unless `per_image`) and the kNN-voted modality and body region.

        `embedded` is `embed_image(query.image)` when the caller already has it (no second decode).
        `k`: the config's when not given. `reported_only`: only cases with a report (always so for a query
        with text)."""
        k = self.config.k if k is None else k
        if query.image is None and not (query.text and query.text.strip()):
            raise QueryError("a query needs an image or a non-empty text")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        check_filters(filters or {})  # before the image is decoded and embedded
        guard = self.config.leakage_guard if leakage_guard is None else leakage_guard
        image_vec, decoded = (embedded or self.embed_image(query.image)) if query.image is not None else (None, None)
        text = query.text.strip() if query.text else ""
        report_vec = self.embed_report_text(text) if text else None
        clip_text_vec = self.embed_clip_text(text) if text and image_vec is None else None
        with self.store.read_point():  # every read of this search at one point of the store's history
            excl = (
                self._exclusions(query, decoded, image_vec, exclude_case_ids or set(), exclude_patient_ids or set())
                if guard
                else _Exclusions(set(exclude_case_ids or ()), set(exclude_patient_ids or ()))
            )
            visual_vec = image_vec if image_vec is not None else clip_text_vec
            visual_weight = self.config.image_weight if image_vec is not None else self.config.text_clip_weight
            if report_vec is None:
                visual_weight = 1.0
            pool = max(4 * k, 50)
            scope = SearchScope(
                filters=dict(filters or {}),
                exclude_case_ids=frozenset(excl.case_ids),
                exclude_patient_ids=frozenset(excl.patient_ids),
                # A fused score reads the report vector: a case without a report cannot be ranked by it.
                reported_only=reported_only or report_vec is not None,
            )
            assert visual_vec is not None
            # Candidates are row ids only: exact rescoring reads their vectors, and only the hits kept are read
            # whole (reports included), which is most of what a search costs in Python.
            candidates = dict.fromkeys(self.store.search_ids("image", visual_vec[None, :], pool, scope)[0][0])
            if report_vec is not None:
                text_cases = self.store.search_ids("text", report_vec[None, :], pool, scope)[0][0]
                candidates.update(dict.fromkeys(self.store.image_ids_of_cases(text_cases)))
            ranked = self._fuse(list(candidates), visual_vec, visual_weight, report_vec, expand=image_vec is not None)
            per_case = _best_per_case(ranked)
            if self.config.case_pooling and image_vec is not None and report_vec is None:
                per_case = self._pooled(per_case, image_vec)
            kept = (ranked if per_image else per_case)[:k]
            voters = (ranked if self.config.vote_by == "image" else per_case)[:VOTE_K]
            # The vote's neighbours and the results overlap: one read for both. Each keeps its own score (a
            # pooled case's differs from its best image's).
            read = list(dict.fromkeys(r.image_row for r in voters + kept))
            hits = self.store.image_hits(read, [0.0] * len(read))
            neighbours = [replace(hits[r.image_row], score=r.score) for r in voters if r.image_row in hits]
            results = tuple(replace(hits[r.image_row], score=r.score) for r in kept if r.image_row in hits)
            return SearchResult(query=query.label, hits=results, predicted=self._predict(neighbours, image_vec))

    def _pooled(self, best: list[_Ranked], query: np.ndarray) -> list[_Ranked]:
        """Candidate cases re-ranked by the query's cosine with their pooled images (best image kept)."""
        rows = self.store.sibling_image_ids([r.image_row for r in best])
        case_ids, vectors, _ = self.store.rescoring_rows(rows, text=False)
        members: dict[str, list[int]] = {}
        for i, case_id in enumerate(case_ids):
            if case_id:
                members.setdefault(case_id, []).append(i)
        pooled = [
            r._replace(score=float(pool_slices(vectors[members[r.case_id]]) @ query))
            for r in best
            if r.case_id in members
        ]
        return sorted(pooled, key=lambda r: -r.score)

    def _predict(self, neighbours: list[Hit], image_vec: np.ndarray | None) -> Prediction:
        """Modality, region and location voted by the neighbours, blended with the encoder's heads when asked."""
        scores = [h.score for h in neighbours]
        shares = {
            "modality": vote_shares([h.modality for h in neighbours], scores),
            "body_region": vote_shares([h.body_region for h in neighbours], scores),
            "location": vote_shares([h.location for h in neighbours], scores),
        }
        classify = getattr(self.image_encoder, "classify", None)
        if self.config.head_weight > 0 and image_vec is not None and classify is not None:
            heads = classify(image_vec[None, :])
            for name in shares:
                if name in heads:
                    shares[name] = blend(shares[name], heads[name][0], self.config.head_weight)
        return Prediction(*winner(shares["modality"]), *winner(shares["body_region"]), *winner(shares["location"]))

    def _fuse(
        self,
        image_ids: list[int],
        visual_vec: np.ndarray,
        visual_weight: float,
        report_vec: np.ndarray | None,
        *,
        expand: bool,
    ) -> list[_Ranked]:
        """Candidates with exact fused scores from their stored vectors, best first."""
        if not image_ids:
            return []
        fuse_text = report_vec is not None and visual_weight < 1.0
        case_ids, image_vecs, text_vecs = self.store.rescoring_rows(image_ids, text=fuse_text)
        scores = image_vecs @ visual_vec
        if expand and self.config.query_expansion:
            known = np.asarray([bool(c) for c in case_ids])
            expansion = self.config.query_expansion
            scores = image_vecs @ expand_query(visual_vec, image_vecs[known], scores[known], expansion)
        if fuse_text:
            assert text_vecs is not None and report_vec is not None
            scores = visual_weight * scores + (1 - visual_weight) * (text_vecs @ report_vec)
        order = np.argsort(-scores, kind="stable")
        return [_Ranked(image_ids[i], float(scores[i]), case_ids[i]) for i in order.tolist() if case_ids[i]]


def expand_query(query: np.ndarray, vectors: np.ndarray, scores: np.ndarray, m: int) -> np.ndarray:
    """Alpha query expansion: the query plus its `m` best-scoring vectors weighted by score³, unit length."""
    top = np.argsort(-scores, kind="stable")[:m]
    weights = np.clip(scores[top], 0.0, None) ** EXPANSION_POWER
    expanded = query + weights @ vectors[top]
    norm = float(np.linalg.norm(expanded))
    return (expanded / norm).astype(np.float32) if norm > 0 else query


def _guess_hu(image: DecodedImage) -> DecodedImage:
    """A query NIfTI carries no modality: values reaching air (≤ −900 at the 1st percentile) mean CT HU.

    Archived NIfTI volumes are windowed as HU when their case says CT; a query must be scaled the same
    way to land near them.
    """
    if image.is_hu or not image.source.lower().endswith((".nii", ".nii.gz")) or not image.pixels.size:
        return image
    if float(np.percentile(image.pixels, 1)) <= -900:
        return replace(image, is_hu=True)
    return image


def _best_per_case(ranked: list[_Ranked]) -> list[_Ranked]:
    seen: set[str] = set()
    best = []
    for row in ranked:
        if row.case_id not in seen:
            seen.add(row.case_id)
            best.append(row)
    return best
