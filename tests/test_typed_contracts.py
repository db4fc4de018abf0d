"""The contracts between layers are types mypy checks: records, `Json` documents, typed dicts. A
`dict[str, Any]` checks nothing, so the packages keep only the few named here, each where `Any` is the
truth (a driver's row, input before it is checked)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "generator", "indexing", "knowledge", "retrieval", "usecases", "kgreport")
UNTYPED = re.compile(r"dict\[str,\s*Any\]")
JUSTIFIED = {
    "kgreport/json_types.py": 2,  # the docstring's mention, and `UncheckedJson`: input before it is checked
    "knowledge/graph/backend.py": 1,  # `GraphRow`: a Cypher answer's row, keyed by the query's aliases
    "retrieval/stores/milvus/connection.py": 1,  # `MilvusRow`: an entity as pymilvus hands it over
    "indexing/pacs/client.py": 1,  # `DicomJson`: a DICOM JSON dataset, values typed by their VR
    "indexing/training/run.py": 1,  # further `TrainingConfig` fields by name, checked by its constructor
}


def untyped_dicts(text: str) -> int:
    return len(UNTYPED.findall(text))


def test_the_scan_sees_each_spelling() -> None:
    assert untyped_dicts("a: dict[str, Any]\nb: list[dict[str,Any]] | None\nc: dict[str, int]") == 2


def test_only_the_justified_untyped_dicts_remain() -> None:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if (count := untyped_dicts(path.read_text())) and not path.is_symlink():
                found[str(path.relative_to(REPO))] = count
    found = {k: v for k, v in found.items() if not k.startswith("kgreport/") or k.count("/") == 1}
    assert found == JUSTIFIED, "a new dict[str, Any]: use a record, Json/JsonObject, a TypedDict, or justify it here"
