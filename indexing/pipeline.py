"""Ingest: archive → decoded images → image and report vectors → case store.

Cases are committed in small batches, one SQLite transaction each, so a build killed mid-way keeps
every finished batch; rerunning the same build skips the cases already stored and finishes the rest
without duplicates. The FAISS files are flushed every few batches and at the end; if a crash leaves
them behind SQLite, the store rebuilds them from SQLite when it is next opened.

With a `FindingRecorder`, each report's findings also go into the ontology graph (before the case is
committed to the store); stored cases the graph does not know yet (an index built without it) get
their findings written when the build or an add runs again over their archive.

A case without a report (a PACS study nobody reported) is skipped ("empty report"), unless
`IngestOptions.image_only`: then it is indexed image-only, its images embedded as usual and its report
stored empty with a zero report vector, so that image search finds it and text search never does (see
`retrieval.stores.local.store`); the summary counts such cases in `image_only`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from kgreport.indexing.case_findings import FindingRecorder
from kgreport.indexing.options import IngestOptions
from kgreport.json_types import JsonObject
from kgreport.retrieval.encoders.image_encoder import ImageEncoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.encoders.volume_embedding import embed_decoded
from kgreport.retrieval.imaging import DecodedImage, ImageDecodeError, load_case_image
from kgreport.retrieval.records import Case, CaseImage, SkippedItem
from kgreport.retrieval.stores.interface import CaseStoreInterface

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did; `skipped` holds every item left out with its reason."""

    cases_added: int = 0
    image_only: int = 0  # of cases_added, those indexed without a report (IngestOptions.image_only)
    images_added: int = 0
    cases_already_present: int = 0
    finding_edges: int = 0  # case -> concept edges written to the graph
    findings_backfilled: int = 0  # stored cases whose findings were missing from the graph
    skipped: list[SkippedItem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images_added / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> JsonObject:
        reasons = Counter(s.reason.split(":")[0] for s in self.skipped)
        return {
            "cases_added": self.cases_added,
            "image_only": self.image_only,
            "images_added": self.images_added,
            "cases_already_present": self.cases_already_present,
            "finding_edges": self.finding_edges,
            "findings_backfilled": self.findings_backfilled,
            "skipped": len(self.skipped),
            "skipped_reasons": dict(reasons.most_common(10)),
            "seconds": round(self.seconds, 2),
            "images_per_second": round(self.images_per_second, 2),
        }


def _decode(case: Case, skipped: list[SkippedItem], options: IngestOptions) -> list[tuple[CaseImage, DecodedImage]]:
    """The case's images decoded; a large volume is read only as far as its `volume_slices` need."""
    decoded = []
    imaging = options.imaging  # a larger 2D picture than max_pixels is skipped unread
    for image in case.images:
        try:
            decoded.append(
                (image, load_case_image(image, max_pixels=imaging.max_pixels, volume_slices=imaging.volume_slices))
            )
        except (ImageDecodeError, OSError, ValueError) as err:
            log.warning("%s: skipping image %s: %s", case.case_id, image.path, err)
            skipped.append(SkippedItem(source=f"{case.case_id}/{image.image_id}", reason=f"unreadable image: {err}"))
    return decoded


def report_text_for_embedding(case: Case) -> str:
    """Report text embedded for text search: the report, then the image captions it lacks."""
    captions = " ".join(dict.fromkeys(img.caption for img in case.images if img.caption))
    return "\n".join(x for x in (case.report.text(), captions) if x)


class Ingestor:
    """Embeds cases and writes them to a store; encoders are loaded once by the caller."""

    def __init__(
        self,
        store: CaseStoreInterface,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        options: IngestOptions | None = None,
        recorder: FindingRecorder | None = None,
    ) -> None:
        self.store = store
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.options = options or IngestOptions()
        self.recorder = recorder

    def _embed_batch(
        self, cases: list[Case], summary: BuildSummary
    ) -> list[tuple[Case, dict[str, np.ndarray], np.ndarray]]:
        items: list[tuple[Case, list[tuple[CaseImage, DecodedImage]]]] = []
        for case in cases:
            if case.report.is_empty() and not self.options.image_only:
                summary.skipped.append(SkippedItem(source=case.case_id, reason="empty report"))
                continue
            decoded = _decode(case, summary.skipped, self.options)
            if not decoded:
                summary.skipped.append(SkippedItem(source=case.case_id, reason="no readable image"))
                continue
            items.append((case, decoded))
        if not items:
            return []
        flat = [d for _, decoded in items for _, d in decoded]
        imaging = self.options.imaging
        vectors = embed_decoded(self.image_encoder, flat, k=imaging.volume_slices, window=imaging.window)
        texts = self._report_vectors([case for case, _ in items])
        out, row = [], 0
        for (case, decoded), text_vector in zip(items, texts, strict=True):
            image_vectors = {}
            for image, _ in decoded:
                image_vectors[image.image_id] = vectors[row]
                row += 1
            out.append((case, image_vectors, text_vector))
        return out

    def _report_vectors(self, cases: list[Case]) -> np.ndarray:
        """One report vector per case: embedded for a case with a report, zero for an image-only one (no text
        is embedded for it, captions included: it must never be found by text)."""
        out = np.zeros((len(cases), self.text_encoder.dim), dtype=np.float32)
        reported = [n for n, case in enumerate(cases) if not case.report.is_empty()]
        if reported:
            out[reported] = self.text_encoder.embed([report_text_for_embedding(cases[n]) for n in reported])
        return out

    def _commit(self, batch: list[Case], summary: BuildSummary) -> None:
        embedded = self._embed_batch(batch, summary)
        if embedded and self.recorder is not None:
            summary.finding_edges += self.recorder.record([case for case, _, _ in embedded])
        if embedded:
            self.store.add_cases(embedded, replace=self.options.replace)
            summary.cases_added += len(embedded)
            summary.image_only += sum(case.report.is_empty() for case, _, _ in embedded)
            summary.images_added += sum(len(v) for _, v, _ in embedded)

    def ingest(
        self, items: Iterable[Case | SkippedItem], progress: Callable[[int], None] | None = None
    ) -> BuildSummary:
        """Add every new case of `items`; `progress(n)` is called after each n items are handled."""
        summary = BuildSummary()
        started = time.perf_counter()
        present = set() if self.options.replace else self.store.case_ids()
        unrecorded = present - self.recorder.recorded_case_ids() if self.recorder and present else set()
        backfill: list[Case] = []
        seen: set[str] = set()
        batch: list[Case] = []
        pending = 0
        batches_since_flush = 0

        def record_backfill() -> None:
            nonlocal backfill
            if self.recorder is not None and backfill:
                summary.finding_edges += self.recorder.record(backfill)
                summary.findings_backfilled += len(backfill)
            backfill = []

        def commit() -> None:
            nonlocal batch, pending, batches_since_flush
            self._commit(batch, summary)
            if progress:
                progress(pending)
            batch, pending = [], 0
            batches_since_flush += 1
            if batches_since_flush >= self.options.flush_every_batches:
                self.store.flush()
                batches_since_flush = 0

        for item in items:
            pending += 1
            if isinstance(item, SkippedItem):
                summary.skipped.append(item)
                log.warning("skipping %s: %s", item.source, item.reason)
            elif item.case_id in seen:
                summary.skipped.append(SkippedItem(source=item.case_id, reason="duplicate case_id in archive"))
            elif item.case_id in present:
                summary.cases_already_present += 1
                seen.add(item.case_id)
                if item.case_id in unrecorded:
                    backfill.append(item)
            else:
                seen.add(item.case_id)
                batch.append(item)
            if len(batch) >= self.options.batch_cases:
                commit()
            if len(backfill) >= self.options.batch_cases:
                record_backfill()
        commit()
        record_backfill()
        self.store.flush()
        summary.seconds = time.perf_counter() - started
        return summary
