"""The one table of known failures, shared by the REST service and the CLI.

Each row maps a domain exception from the layers below to the HTTP status and error code the service
answers, and the CLI turns every one of them into one clear line and exit code 2. Anything not in the
table is a defect: a JSON 500 from the service, a traceback from the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

EXIT_KNOWN_FAILURE = 2  # the CLI's exit code for every row: bad input, or a service it needs is down


@dataclass(frozen=True)
class KnownError:
    """A domain exception and how both front ends report it."""

    kind: type[Exception]
    status: int
    code: str


@cache
def known_errors() -> tuple[KnownError, ...]:
    """The table, most specific class first (a subclass must come before its base).

    Imports are local: the table names exceptions of every layer, and importing them all is only
    paid by the front end that needs the table.
    """
    from api.operations import CaseExistsError, IndexBusyError, OperationError
    from api.reporting import GeneratorNotFoundError, WriterMismatchError
    from api.services import EncoderMismatchError
    from generator.llm import LLMLoadError
    from generator.notes import NotesError
    from generator.pipeline import ReportGenerationError
    from indexing.archives import ArchiveError
    from indexing.pacs.client import NotDicomWebError, PacsAuthError, PacsError, PacsUnavailableError
    from knowledge.graph import GraphUnavailableError
    from retrieval.encoders.image_encoder import EncoderLoadError
    from retrieval.ids import InvalidIdError
    from retrieval.imaging import ImageDecodeError
    from retrieval.search import QueryError
    from retrieval.stores.local.store import IndexNotFoundError, IndexUnreadableError
    from retrieval.stores.milvus.connection import CaseStoreUnavailableError
    from retrieval.stores.milvus.filters import UnknownFilterFieldError

    rows: list[tuple[type[Exception], int, str]] = [
        (IndexNotFoundError, 404, "index_not_found"),
        (IndexUnreadableError, 503, "index_unreadable"),
        (CaseExistsError, 409, "case_exists"),
        (IndexBusyError, 409, "index_busy"),
        (EncoderMismatchError, 409, "encoder_mismatch"),
        (InvalidIdError, 422, "invalid_id"),
        (ImageDecodeError, 422, "image_unreadable"),
        (QueryError, 422, "bad_query"),
        (UnknownFilterFieldError, 422, "unknown_filter_field"),
        (NotesError, 422, "bad_notes"),
        (PacsAuthError, 502, "pacs_auth_failed"),
        (PacsUnavailableError, 502, "pacs_unavailable"),
        (NotDicomWebError, 502, "not_dicomweb"),
        (PacsError, 502, "pacs_error"),
        (ArchiveError, 422, "bad_archive"),
        (OperationError, 422, "bad_request"),
        (GraphUnavailableError, 503, "graph_unavailable"),
        (CaseStoreUnavailableError, 503, "case_store_unavailable"),
        (EncoderLoadError, 503, "encoder_unavailable"),
        (GeneratorNotFoundError, 503, "report_writer_missing"),
        (WriterMismatchError, 503, "report_writer_mismatch"),
        (LLMLoadError, 503, "llm_unavailable"),
        (ReportGenerationError, 502, "report_generation_failed"),
        (FileNotFoundError, 404, "not_found"),
        (ValueError, 422, "bad_request"),
    ]
    return tuple(KnownError(kind, status, code) for kind, status, code in rows)


def known_error_types() -> tuple[type[Exception], ...]:
    """The exception classes of the table, for an `except` clause."""
    return tuple(row.kind for row in known_errors())
