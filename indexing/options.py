"""How an archive is ingested: the one record of its defaults (`usecases.settings.Settings` reads them here).

Kept apart from `indexing.pipeline` so the settings can read a default without loading the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kgreport.retrieval.config import ImagingConfig


@dataclass
class IngestOptions:
    """How an archive is ingested; `usecases.settings.Settings` takes its `ingest_batch_cases` default from here."""

    batch_cases: int = 16
    flush_every_batches: int = 8
    imaging: ImagingConfig = field(default_factory=ImagingConfig)  # as queries are: the same case, the same vector
    replace: bool = False  # re-embed cases already in the store instead of skipping them
    image_only: bool = False  # index a case without a report by its images alone, instead of skipping it
