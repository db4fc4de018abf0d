"""Every known failure answers one status and code, decided by its kind in the one table (`api.error_table`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kgreport.api.error_table import describe
from kgreport.errors import KgreportError, SettingError
from kgreport.generator.llm import LLMLoadError
from kgreport.generator.notes import NotesError
from kgreport.generator.pipeline import ReportGenerationError
from kgreport.indexing.archives import ArchiveError
from kgreport.indexing.archives.base import OutsideRootError
from kgreport.indexing.pacs.errors import (
    NotDicomWebError,
    PacsAuthError,
    PacsError,
    PacsQueryError,
    PacsUnavailableError,
    PacsUrlError,
)
from kgreport.knowledge.graph import GraphUnavailableError
from kgreport.retrieval.encoders.image_encoder import EncoderLoadError
from kgreport.retrieval.ids import InvalidIdError
from kgreport.retrieval.imaging import ImageDecodeError
from kgreport.retrieval.imaging.errors import ImageNotFoundError
from kgreport.retrieval.imaging.windows import UnknownWindowError
from kgreport.retrieval.manifest import IndexNotFoundError, IndexUnreadableError
from kgreport.retrieval.search import QueryError
from kgreport.retrieval.stores.local.rows_db import DuplicateImageError
from kgreport.retrieval.stores.milvus.connection import CaseStoreUnavailableError
from kgreport.retrieval.stores.milvus.filters import UnknownFilterFieldError
from kgreport.retrieval.stores.milvus.schema import FieldTooLongError
from kgreport.retrieval.stores.scope import InvalidFilterError
from kgreport.usecases.ingest import CaseExistsError, IndexBusyError, OperationError
from kgreport.usecases.reporting import GeneratorNotFoundError, WriterMismatchError
from kgreport.usecases.services import EncoderMismatchError

REPO = Path(__file__).resolve().parents[2]

# What each answered before the kinds existed (the table then listed every class): nothing may change.
ANSWERS: list[tuple[type[Exception], int, str]] = [
    (IndexNotFoundError, 404, "index_not_found"),
    (IndexUnreadableError, 503, "index_unreadable"),
    (CaseExistsError, 409, "case_exists"),
    (IndexBusyError, 409, "index_busy"),
    (EncoderMismatchError, 409, "encoder_mismatch"),
    (ImageDecodeError, 422, "image_unreadable"),
    (QueryError, 422, "bad_query"),
    (UnknownFilterFieldError, 422, "unknown_filter_field"),
    (NotesError, 422, "bad_notes"),
    (PacsAuthError, 502, "pacs_auth_failed"),
    (PacsUnavailableError, 502, "pacs_unavailable"),
    (NotDicomWebError, 502, "not_dicomweb"),
    (PacsError, 502, "pacs_error"),
    (PacsUrlError, 422, "bad_pacs_url"),
    (ArchiveError, 422, "bad_archive"),
    (OperationError, 422, "bad_request"),
    (CaseStoreUnavailableError, 503, "case_store_unavailable"),
    (EncoderLoadError, 503, "encoder_unavailable"),
    (GeneratorNotFoundError, 503, "report_writer_missing"),
    (WriterMismatchError, 503, "report_writer_mismatch"),
    (LLMLoadError, 503, "llm_unavailable"),
    (ReportGenerationError, 502, "report_generation_failed"),
    # Once plain builtins that the table caught by their base; each is one of the kinds now, same answer.
    (ImageNotFoundError, 404, "not_found"),
    (UnknownWindowError, 422, "bad_request"),
    (InvalidFilterError, 422, "bad_request"),
    (PacsQueryError, 422, "bad_request"),
    (DuplicateImageError, 422, "bad_request"),
    (FieldTooLongError, 422, "bad_request"),
    (OutsideRootError, 422, "bad_request"),
]


def test_a_plain_builtin_is_a_defect_not_the_clients_fault() -> None:
    """No row catches `ValueError` or `FileNotFoundError` by its base: a request that raises one is a 500."""
    assert describe(ValueError("x")) is None and describe(FileNotFoundError("x")) is None
    assert describe(SettingError("KGREPORT_X")) == (503, "bad_setting")  # the server's setting, not the request


@pytest.mark.parametrize(("kind", "status", "code"), ANSWERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_failure_answers_as_it_always_did(kind: type[Exception], status: int, code: str) -> None:
    err = kind.__new__(kind)  # some take several arguments; the answer depends on the class alone
    assert describe(err) == (status, code)


def test_the_ones_that_need_arguments_too() -> None:
    assert describe(InvalidIdError("case id", "a/b")) == (422, "invalid_id")
    assert describe(GraphUnavailableError("FalkorDB", "redis://x", "refused")) == (503, "graph_unavailable")
    assert describe(RuntimeError("a defect")) is None, "anything not in the table is a 500"


def test_every_known_failure_has_its_own_code() -> None:
    """A class of ours deriving from the base names its code (the base's 'error' says nothing)."""
    missing = []
    for path in REPO.glob("[a-z]*/**/*.py"):
        if path.parts[len(REPO.parts)] not in ("api", "generator", "indexing", "knowledge", "retrieval", "usecases"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                has_code = any(
                    isinstance(s, ast.Assign) and any(getattr(t, "id", None) == "code" for t in s.targets)
                    for s in node.body
                )
                if not has_code:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    known = {cls.__name__ for cls in _subclasses(KgreportError)}
    assert not [m for m in missing if m.rsplit(" ", 1)[1] in known], missing


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out
