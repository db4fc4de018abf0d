"""Reports kept beside image folders, for the DICOM-folder and NIfTI-folder archives.

A `reports.jsonl` or `reports.csv` at the archive root holds one row per case: `case_id`, `report`
and optionally `patient_id`, `modality`, `body_region`. A plain-text report file (`report.txt` in a
study folder, `<stem>.txt` beside a NIfTI volume) is the other source.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from indexing.archives.base import ArchiveError
from retrieval.records import REPORT_SECTIONS, ReportSections
from retrieval.report_sections import split_report

REPORT_FILES = ("reports.jsonl", "reports.csv")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Keys stripped (spreadsheets pad headers) and blank strings as None."""
    cleaned: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:  # csv puts surplus cells of a long row under None
            continue
        name = str(key).strip()
        cleaned[name] = (value.strip() or None) if isinstance(value, str) and name != "report" else value
    return cleaned


def read_report_table(root: Path) -> dict[str, dict[str, Any]]:
    """Rows of the archive's report table by `case_id` (empty when there is none; JSONL wins over CSV).

    A later row with the same case_id replaces an earlier one. A line that is not JSON makes the whole
    table unreadable (ArchiveError naming the line): guessing which reports were meant is worse.
    """
    table: dict[str, dict[str, Any]] = {}
    jsonl, csv_file = root / REPORT_FILES[0], root / REPORT_FILES[1]
    if jsonl.is_file():
        for line_no, line in enumerate(jsonl.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ArchiveError(f"{jsonl}:{line_no}: not JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ArchiveError(f"{jsonl}:{line_no}: expected a JSON object, got {type(row).__name__}")
            row = _clean(row)
            if row.get("case_id") not in (None, ""):
                table[str(row["case_id"]).strip()] = row
    elif csv_file.is_file():
        with csv_file.open(encoding="utf-8-sig", newline="") as handle:  # -sig: Excel writes a BOM
            reader = csv.DictReader(handle)
            if reader.fieldnames is not None and "case_id" not in [f.strip() for f in reader.fieldnames]:
                raise ArchiveError(f"{csv_file}: no case_id column (columns: {', '.join(reader.fieldnames)})")
            for raw in reader:
                row = _clean(raw)
                if row.get("case_id"):
                    table[str(row["case_id"]).strip()] = row
    return table


def read_text_report(path: Path) -> str | None:
    """The text of a report file, or None when there is no such file."""
    return path.read_text(encoding="utf-8-sig", errors="replace") if path.is_file() else None


def report_sections(value: Any) -> ReportSections:
    """A report given as text (split at its headings) or as an object of sections."""
    if isinstance(value, dict):
        return ReportSections(**{name: str(value.get(name) or "").strip() for name in REPORT_SECTIONS})
    return split_report(str(value or ""))


def table_text(value: Any) -> str | None:
    """A report-table cell as stripped text, None when blank (CSV strings and JSON numbers alike)."""
    text = str(value).strip() if value is not None else ""
    return text or None


def table_labels(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(modality, body region) of a report-table row, cased like DICOM headers give them ("CT", "chest")."""
    modality, region = table_text(row.get("modality")), table_text(row.get("body_region"))
    return (modality.upper() if modality else None), (region.lower() if region else None)
