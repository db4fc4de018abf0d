"""Generic JSONL or CSV manifests: one case per row.

Row fields: `case_id`, `images` (a list, or in CSV a `;`-separated string or a JSON list), `report`
(text with optional headings, or an object of sections), and optional `patient_id`, `modality`,
`body_region`, `captions` (parallel to images); every other field goes into the case's metadata.
Image paths are relative to the manifest's folder and must stay inside it: a path that resolves
outside the archive root (`../../etc/passwd`, an absolute path elsewhere, a symlink pointing out) is
dropped with a warning, and a row left with no image is skipped naming the paths. A `case_id` or
`patient_id` that breaks the id rule (`retrieval.ids`) skips its row, naming the file and line; ids
are checked as written, so `"x\n"` or `" x"` is refused rather than quietly becoming `x`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kgreport.indexing.archives.base import ArchiveError, inside_root, outside_reason, skip, warn_dropped
from kgreport.json_types import UncheckedJson
from kgreport.retrieval.ids import InvalidIdError, check_id
from kgreport.retrieval.records import REPORT_SECTIONS, Case, CaseImage, ReportSections, SkippedItem
from kgreport.retrieval.report_sections import split_report

_KNOWN_FIELDS = {"case_id", "patient_id", "images", "report", "modality", "body_region", "captions"}


def as_list(value: Any) -> list[str]:
    """A row's list field: a list, a JSON list in a string, or a `;`-separated string."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in json.loads(text)]
        except json.JSONDecodeError:
            pass
    return [part.strip() for part in text.split(";") if part.strip()]


def _report(value: Any) -> ReportSections:
    if isinstance(value, dict):
        return ReportSections(**{k: str(value.get(k) or "").strip() for k in REPORT_SECTIONS})
    return split_report(str(value or ""))


class ManifestArchive:
    """Reader for a `.jsonl` or `.csv` manifest."""

    def __init__(self, manifest: str | Path) -> None:
        self.path = Path(manifest)
        if not self.path.is_file():
            raise ArchiveError(f"{self.path}: manifest not found")
        self.root = self.path.parent.resolve()
        self.name = f"manifest:{self.path.name}"
        self._rows = self._read_rows()

    def _read_rows(self) -> list[tuple[str, UncheckedJson | None]]:
        """Rows as (source label, row or None when the line is unreadable)."""
        suffix = self.path.suffix.lower()
        rows: list[tuple[str, UncheckedJson | None]] = []
        if suffix in {".jsonl", ".ndjson", ".json"}:
            with self.path.open(encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        row = None
                    rows.append((f"{self.path.name}:{line_no}", row if isinstance(row, dict) else None))
        elif suffix == ".csv":
            with self.path.open(encoding="utf-8", newline="") as handle:
                for line_no, row in enumerate(csv.DictReader(handle), 2):
                    rows.append((f"{self.path.name}:{line_no}", dict(row)))
        else:
            raise ArchiveError(f"{self.path}: manifest must be .jsonl or .csv, not {suffix or 'no suffix'}")
        return rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[tuple[str, UncheckedJson | None]]:
        """The rows as read: (source label, row, or None for a line that is not a JSON object)."""
        return list(self._rows)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        for source, row in self._rows:
            if row is None:
                yield SkippedItem(source=source, reason="line is not a JSON object")
                continue
            yield self._case(source, row)

    def _case(self, source: str, row: UncheckedJson) -> Case | SkippedItem:
        case_id = str(row.get("case_id") or "")
        if not case_id.strip():
            return SkippedItem(source=source, reason="row without case_id")
        patient = row.get("patient_id")
        patient_id = str(patient) if patient not in (None, "") else None  # ids as written: no stripping
        try:
            check_id(case_id, "case id", source)
            if patient_id is not None:
                check_id(patient_id, "patient id", source)
        except InvalidIdError as err:
            return skip(source, str(err))
        report = _report(row.get("report"))
        if report.is_empty():
            return SkippedItem(source=case_id, reason="empty report")
        names = as_list(row.get("images"))
        captions = as_list(row.get("captions"))
        images, outside = [], []
        for i, name in enumerate(names):
            path = inside_root(self.root / name, self.root)
            if path is None:
                outside.append(name)
                warn_dropped(f"{source} ({case_id})", outside_reason("image path", name))
                continue
            images.append(
                CaseImage(
                    image_id=f"{case_id}/{Path(name).name}",
                    path=path,
                    caption=captions[i] if i < len(captions) else "",
                    modality=row.get("modality") or None,
                    body_region=row.get("body_region") or None,
                )
            )
        if not images and outside:
            listed = ", ".join(repr(n) for n in outside)
            return skip(case_id, f"image paths {listed} resolve outside the archive root; no image left")
        if not images:
            return SkippedItem(source=case_id, reason="row lists no images")
        return Case(
            case_id=case_id,
            images=tuple(images),
            report=report,
            patient_id=patient_id,
            modality=row.get("modality") or None,
            body_region=row.get("body_region") or None,
            metadata={k: v for k, v in row.items() if k not in _KNOWN_FIELDS and v not in (None, "")},
        )
