"""Reports kept beside image folders: `reports.jsonl` / `reports.csv` at the archive root, keyed by case."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from indexing.archives.base import ArchiveError

REPORT_FILES = ("reports.jsonl", "reports.csv")


def read_report_table(root: Path) -> dict[str, dict[str, Any]]:
    """Rows of the archive's report table by `case_id` (empty when the archive has none)."""
    table: dict[str, dict[str, Any]] = {}
    jsonl, csv_file = root / REPORT_FILES[0], root / REPORT_FILES[1]
    if jsonl.is_file():
        for line_no, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ArchiveError(f"{jsonl}:{line_no}: not JSON ({err.msg})") from err
            if isinstance(row, dict) and row.get("case_id"):
                table[str(row["case_id"])] = row
    elif csv_file.is_file():
        with csv_file.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("case_id"):
                    table[str(row["case_id"])] = row
    return table


def read_text_report(path: Path) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
