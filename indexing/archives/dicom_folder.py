"""A folder of DICOM files: one case per study, one case image per series.

Reports come from the archive's `reports.jsonl`/`reports.csv` (keyed by StudyInstanceUID,
AccessionNumber or the study's folder name) or from a `report.txt` in the study's folder. A series
with unreadable files or slices of different sizes is skipped with its reason; the study keeps its
other series.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from indexing.archives.base import ArchiveError
from indexing.archives.sidecar_reports import read_report_table, read_text_report
from indexing.reports import split_report
from retrieval.imaging import DicomSeries, find_series
from retrieval.records import Case, CaseImage, SkippedItem


class DicomFolderArchive:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArchiveError(f"{self.root}: DICOM folder not found")
        self.name = f"dicom:{self.root.name}"
        self._reports = read_report_table(self.root)

    @cached_property
    def _scan(self) -> tuple[dict[str, list[DicomSeries]], list[tuple[Path, str]]]:
        series, problems = find_series(self.root)
        studies: dict[str, list[DicomSeries]] = defaultdict(list)
        for s in series:
            studies[s.study_uid or f"no-study-uid:{s.files[0].parent}"].append(s)
        return dict(studies), problems

    def __len__(self) -> int:
        studies, problems = self._scan
        return len(studies) + len(problems)

    def _report_for(self, study_uid: str, series: list[DicomSeries]) -> tuple[str, dict[str, Any] | None, str | None]:
        """(case id, report row, report text) by the first key that has a report."""
        import pydicom

        first = series[0].files[0]
        accession = str(pydicom.dcmread(first, stop_before_pixels=True).get("AccessionNumber") or "")
        folder = Path(*first.relative_to(self.root).parts[:1]).name if first.parent != self.root else ""
        for key in (study_uid, accession, folder):
            if key and key in self._reports:
                row = self._reports[key]
                return key, row, str(row.get("report") or "")
        for directory in {first.parent, first.parent.parent}:
            text = read_text_report(directory / "report.txt")
            if text is not None:
                return study_uid, None, text
        return study_uid, None, None

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        studies, problems = self._scan
        for path, reason in problems:
            yield SkippedItem(source=str(path), reason=reason)
        for study_uid, series in studies.items():
            yield from self._case(study_uid, series)

    def _case(self, study_uid: str, series: list[DicomSeries]) -> Iterator[Case | SkippedItem]:
        case_id, row, text = self._report_for(study_uid, series)
        if text is None:
            yield SkippedItem(source=study_uid, reason=f"no report for study {study_uid}")
            return
        report = split_report(text)
        if report.is_empty():
            yield SkippedItem(source=case_id, reason="empty report")
            return
        images = []
        for s in series:
            bad = s.inconsistent_file()
            if bad is not None:
                yield SkippedItem(
                    source=f"{case_id}/{s.series_uid}",
                    reason=f"inconsistent slice sizes in series {s.series_uid}: {bad}",
                )
                continue
            images.append(
                CaseImage(
                    image_id=s.series_uid,
                    path=s.files[0].parent,
                    modality=s.modality,
                    body_region=s.body_part,
                    metadata={"dicom_files": [str(f) for f in s.files], "series_uid": s.series_uid},
                )
            )
        if not images:
            yield SkippedItem(source=case_id, reason="no usable series")
            return
        row = row or {}
        yield Case(
            case_id=case_id,
            images=tuple(images),
            report=report,
            patient_id=str(row.get("patient_id") or series[0].patient_id or "") or None,
            modality=row.get("modality") or series[0].modality,
            body_region=row.get("body_region") or series[0].body_part,
            metadata={"study_uid": study_uid},
        )
