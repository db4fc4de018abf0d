"""Reports kept beside image folders, for the DICOM-folder and NIfTI-folder archives.

A `reports.jsonl` or `reports.csv` at the archive root holds one row per case: `case_id`, `report`
and optionally `patient_id`, `modality`, `body_region`. A plain-text report file (`report.txt` in a
study folder, `<stem>.txt` beside a NIfTI volume) is the other source.

Both stay inside the archive root. A report table that resolves outside it (a symlink elsewhere) is
an `ArchiveError`: ignoring it would silently swap in other reports or skip every case. A text report
that resolves outside raises `OutsideRootError`, and the readers skip that case with the reason
rather than index it without its report. Ids are read as written (not stripped): a table row whose
`case_id` breaks the id rule (`retrieval.ids`) is left out as a `SkippedItem` naming the file and
line; one whose `patient_id` breaks it skips its case, naming the row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgreport.indexing.archives.base import ArchiveError, OutsideRootError, inside_root, outside_reason, skip
from kgreport.json_types import UncheckedJson
from kgreport.retrieval.ids import InvalidIdError, check_id
from kgreport.retrieval.records import REPORT_SECTIONS, ReportSections, SkippedItem
from kgreport.retrieval.report_sections import split_report

REPORT_FILES = ("reports.jsonl", "reports.csv")
_ID_FIELDS = ("case_id", "patient_id")


@dataclass(frozen=True)
class ReportRow:
    """One report-table row: its fields (keys stripped, blanks as None) and where it is (`reports.csv:3`)."""

    where: str
    fields: Mapping[str, Any]


@dataclass
class ReportTable:
    """The archive's report table: usable rows by case id, and the rows left out with their reasons."""

    rows: dict[str, ReportRow] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)

    def get(self, case_id: str | None) -> ReportRow | None:
        return self.rows.get(case_id) if case_id else None

    def __contains__(self, case_id: object) -> bool:
        return case_id in self.rows

    def add(self, where: str, row: UncheckedJson) -> None:
        """Keep `row` under its case id (a later row replaces an earlier one); blank ids are ignored."""
        value = row.get("case_id")
        if value is None:
            return
        case_id = str(value)
        try:
            check_id(case_id, "case id", where)
        except InvalidIdError as err:
            self.skipped.append(skip(where, str(err)))
            return
        self.rows[case_id] = ReportRow(where=where, fields=row)


def _clean(row: UncheckedJson) -> UncheckedJson:
    """Keys stripped (spreadsheets pad headers), blank strings as None, other cells stripped.

    Ids are kept as written: `'x\n'` must fail the id rule, not turn into another case's `'x'`.
    """
    cleaned: UncheckedJson = {}
    for key, value in row.items():
        if key is None:  # csv puts surplus cells of a long row under None
            continue
        name = str(key).strip()
        if isinstance(value, str) and name != "report":
            value = None if not value.strip() else value if name in _ID_FIELDS else value.strip()
        cleaned[name] = value
    return cleaned


def _table_file(root: Path, name: str) -> Path | None:
    """The table file `name` at the root when present; ArchiveError when it resolves outside the root."""
    path = root / name
    if not path.is_file():
        return None
    if inside_root(path, root) is None:
        raise ArchiveError(f"{path}: {outside_reason('report table', name)}; copy it into the archive")
    return path


def read_report_table(root: Path) -> ReportTable:
    """The archive's report table (empty when there is none; JSONL wins over CSV).

    A later row with the same case_id replaces an earlier one. A line that is not JSON makes the whole
    table unreadable (ArchiveError naming the line): guessing which reports were meant is worse.
    """
    table = ReportTable()
    jsonl = _table_file(root, REPORT_FILES[0])
    csv_file = None if jsonl else _table_file(root, REPORT_FILES[1])
    if jsonl is not None:
        for line_no, line in enumerate(jsonl.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ArchiveError(f"{jsonl}:{line_no}: not JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ArchiveError(f"{jsonl}:{line_no}: expected a JSON object, got {type(row).__name__}")
            table.add(f"{jsonl.name}:{line_no}", _clean(row))
    elif csv_file is not None:
        with csv_file.open(encoding="utf-8-sig", newline="") as handle:  # -sig: Excel writes a BOM
            reader = csv.DictReader(handle)
            if reader.fieldnames is not None and "case_id" not in [f.strip() for f in reader.fieldnames]:
                raise ArchiveError(f"{csv_file}: no case_id column (columns: {', '.join(reader.fieldnames)})")
            for raw in reader:
                table.add(f"{csv_file.name}:{reader.line_num}", _clean(raw))
    return table


def read_text_report(path: Path, root: Path) -> str | None:
    """The text of a report file, None when there is no such file, OutsideRootError when it resolves outside `root`."""
    if not path.is_file():
        return None
    if inside_root(path, root) is None:
        raise OutsideRootError(path, "report file")
    return path.read_text(encoding="utf-8-sig", errors="replace")


def report_sections(value: Any) -> ReportSections:
    """A report given as text (split at its headings) or as an object of sections."""
    if isinstance(value, dict):
        return ReportSections(**{name: str(value.get(name) or "").strip() for name in REPORT_SECTIONS})
    return split_report(str(value or ""))


def table_text(value: Any) -> str | None:
    """A report-table cell as stripped text, None when blank (CSV strings and JSON numbers alike)."""
    text = str(value).strip() if value is not None else ""
    return text or None


def table_patient_id(row: ReportRow | None) -> str | None:
    """The row's `patient_id` when it has one; InvalidIdError naming the row when it breaks the id rule."""
    if row is None or row.fields.get("patient_id") is None:
        return None
    return check_id(str(row.fields["patient_id"]), "patient id", row.where)


def table_labels(row: ReportRow | None) -> tuple[str | None, str | None]:
    """(modality, body region) of a report-table row, cased like DICOM headers give them ("CT", "chest")."""
    if row is None:
        return None, None
    modality, region = table_text(row.fields.get("modality")), table_text(row.fields.get("body_region"))
    return (modality.upper() if modality else None), (region.lower() if region else None)
