"""A folder of DICOM files: one case per study (StudyInstanceUID), one case image per series.

Reports come from the archive's `reports.jsonl`/`reports.csv`, keyed by StudyInstanceUID,
AccessionNumber or the name of the study's folder (the case id is the key that matched), or from a
`report.txt` in the study's folder. Only headers are read: a series whose files are unreadable or
whose slices differ in size is skipped with its reason, and the study keeps its other series.
Projection series (CR, DX, MG, US, ...) give one case image per file, since their files are separate
pictures rather than slices.

Nothing outside the archive root is used. A series with any file that resolves outside it (a
symlinked `.dcm`) is skipped whole, before studies are formed: its uids, patient id and labels may
come from that outside file, so none of its headers is trusted. A `report.txt` that resolves outside
skips its study (the case is not indexed without its report). A case id (table key, StudyInstanceUID
or folder name) breaking the id rule skips its study; a patient id from a header that breaks the rule
is replaced by a stable digest (`retrieval.ids.header_patient_id`), one from the table skips the case.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kgreport.indexing.archives.base import ArchiveError, OutsideRootError, inside_root, outside_reason, skip
from kgreport.indexing.archives.sidecar_reports import (
    ReportRow,
    read_report_table,
    read_text_report,
    report_sections,
    table_labels,
    table_patient_id,
)
from kgreport.retrieval.ids import InvalidIdError, check_id, header_patient_id
from kgreport.retrieval.imaging import DicomSeries, scan_dicom_folder
from kgreport.retrieval.records import Case, CaseImage, SkippedItem

STUDY_REPORT_FILE = "report.txt"


@dataclass
class _Study:
    """The series of one StudyInstanceUID and the folder that holds them all."""

    uid: str | None
    series: list[DicomSeries]
    folder: Path
    own_folders: list[Path] = field(default_factory=list)  # folder and ancestors holding no other study

    @property
    def label(self) -> str:
        return self.uid or self.folder.name

    @property
    def accession_number(self) -> str | None:
        return next((s.accession_number for s in self.series if s.accession_number), None)


class DicomFolderArchive:
    """Reader for a folder tree of DICOM files; the tree's headers are scanned once and cached."""

    def __init__(self, root: str | Path, *, image_only: bool = False) -> None:
        self.root = Path(root)
        self.image_only = image_only  # a study without a report is a case with an empty one, not skipped
        if not self.root.is_dir():
            raise ArchiveError(f"{self.root}: DICOM folder not found")
        self.name = f"dicom:{self.root.name}"
        self._reports = read_report_table(self.root)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        yield from self._items

    @cached_property
    def _items(self) -> list[Case | SkippedItem]:
        """Every case and skipped item, built from headers alone (so `len` is exact and cheap after)."""
        scan = scan_dicom_folder(self.root)
        items: list[Case | SkippedItem] = list(self._reports.skipped)
        series = [s for s in scan.series if self._inside(s, items)]
        inside_unreadable = []
        for path, reason in scan.unreadable:
            if inside_root(path, self.root) is None:
                items.append(skip(str(path), outside_reason("DICOM file", path.relative_to(self.root))))
            else:
                inside_unreadable.append((path, reason))
        unreadable = self._attribute_unreadable(series, inside_unreadable, items)
        used_keys: dict[str, str] = {}
        for study in self._studies(series):
            items.extend(self._study_items(study, unreadable, used_keys))
        return items

    def _inside(self, series: DicomSeries, items: list[Case | SkippedItem]) -> bool:
        """True when every file of `series` resolves inside the root; else its skip is added to `items`."""
        outside = [f for f in series.files if inside_root(f, self.root) is None]
        if not outside:
            return True
        first = outside[0].relative_to(self.root)
        more = f" and {len(outside) - 1} more" if len(outside) > 1 else ""
        what = f"DICOM file{more} of series {series.series_uid}"
        items.append(skip(str(outside[0]), f"{outside_reason(what, first)}; the series is left out"))
        return False

    @staticmethod
    def _attribute_unreadable(
        series: list[DicomSeries], unreadable: list[tuple[Path, str]], items: list[Case | SkippedItem]
    ) -> dict[str, list[str]]:
        """Reasons per series uid for unreadable files in a folder holding exactly one series.

        Files elsewhere cannot be tied to a series and are skipped on their own (appended to `items`).
        """
        series_in: dict[Path, set[str]] = defaultdict(set)
        for s in series:
            for f in s.files:
                series_in[f.parent].add(s.series_uid)
        reasons: dict[str, list[str]] = defaultdict(list)
        for path, reason in unreadable:
            owners = series_in.get(path.parent, set())
            if len(owners) == 1:
                reasons[next(iter(owners))].append(reason)
            else:
                items.append(SkippedItem(source=str(path), reason=reason))
        return reasons

    def _studies(self, series: list[DicomSeries]) -> list[_Study]:
        grouped: dict[str, list[DicomSeries]] = defaultdict(list)
        for s in series:
            # Without a StudyInstanceUID the top folder under the root stands for the study.
            top = s.files[0].relative_to(self.root).parts[0] if s.files[0].parent != self.root else ""
            grouped[s.study_uid or f"no-study-uid:{top}"].append(s)
        studies = []
        for key, members in grouped.items():
            folder = Path(os.path.commonpath([str(f.parent) for s in members for f in s.files]))
            studies.append(_Study(uid=None if key.startswith("no-study-uid:") else key, series=members, folder=folder))
        holders: dict[Path, set[int]] = defaultdict(set)
        for index, study in enumerate(studies):
            for folder in self._folders_up_to_root(study.folder):
                holders[folder].add(index)
        for index, study in enumerate(studies):
            study.own_folders = [f for f in self._folders_up_to_root(study.folder) if holders[f] == {index}]
        return sorted(studies, key=lambda st: (str(st.folder), st.uid or ""))

    def _folders_up_to_root(self, folder: Path) -> list[Path]:
        """`folder` and its ancestors below the archive root, nearest first."""
        chain = []
        while folder != self.root and folder.is_relative_to(self.root):
            chain.append(folder)
            folder = folder.parent
        return chain

    def _report_for(self, study: _Study) -> tuple[str, ReportRow | None, Any] | None:
        """(case id, report-table row, report value) by the first key that has one, else report.txt.

        OutsideRootError when the report.txt found resolves outside the archive root.
        """
        keys = [study.uid, study.accession_number, *(f.name for f in study.own_folders)]
        for key in keys:
            row = self._reports.get(key)
            if key and row is not None:
                return key, row, row.fields.get("report")
        for folder in study.own_folders:
            text = read_text_report(folder / STUDY_REPORT_FILE, self.root)
            if text is not None:
                return study.label, None, text
        return None

    def _study_items(
        self, study: _Study, unreadable: dict[str, list[str]], used_keys: dict[str, str]
    ) -> list[Case | SkippedItem]:
        try:
            found = self._report_for(study)
            if found is None and not self.image_only:
                return [SkippedItem(source=str(study.folder), reason=f"no report for study {study.label}")]
            case_id, row, value = found if found is not None else (study.label, None, "")
            check_id(case_id, "case id", f"study folder {study.folder.relative_to(self.root)}")
        except (OutsideRootError, InvalidIdError) as err:
            return [skip(str(study.folder), str(err))]
        try:
            table_patient = table_patient_id(row)
        except InvalidIdError as err:
            return [skip(case_id, str(err))]
        if case_id in used_keys:
            reason = f"report key {case_id!r} also matches study {used_keys[case_id]}; case ids must be unique"
            return [SkippedItem(source=str(study.folder), reason=reason)]
        used_keys[case_id] = study.label
        report = report_sections(value)
        if report.is_empty() and not self.image_only:
            return [SkippedItem(source=case_id, reason="empty report")]
        items: list[Case | SkippedItem] = []
        images: list[CaseImage] = []
        for series in study.series:
            source = f"{case_id}/{series.series_uid}"
            problem = self._series_problem(series, unreadable.get(series.series_uid))
            if problem is not None:
                items.append(SkippedItem(source=source, reason=problem))
            elif series.is_projection:
                images.extend(self._pictures(series))
            else:
                images.append(self._volume(series))
        if not images:
            items.append(SkippedItem(source=case_id, reason=f"no usable image series in study {study.label}"))
            return items
        modalities = Counter(image.modality for image in images if image.modality)
        modality, body_region = table_labels(row)
        header_patient = header_patient_id(next((s.patient_id for s in study.series if s.patient_id), None))
        items.append(
            Case(
                case_id=case_id,
                images=tuple(images),
                report=report,
                patient_id=table_patient or header_patient,
                modality=modality or (modalities.most_common(1)[0][0] if modalities else None),
                body_region=body_region or next((i.body_region for i in images if i.body_region), None),
                metadata={
                    "study_uid": study.uid,
                    "accession_number": study.accession_number,
                    "study_folder": str(study.folder),
                },
            )
        )
        return items

    @staticmethod
    def _series_problem(series: DicomSeries, unreadable: list[str] | None) -> str | None:
        """Why a series cannot be used, naming the series and the file; None when it can."""
        uid = series.series_uid
        if not series.is_image:
            return f"series {uid} holds no images (Modality {series.modality})"
        if unreadable:
            return f"unreadable file in series {uid}: {unreadable[0]}"
        if series.is_projection:
            return None  # each file is its own picture: sizes may differ
        size = series.size_problem()
        if size is not None:
            return f"inconsistent slice sizes in series {uid}: {size}"
        frames = series.frames_problem()
        return f"mixed multi-frame and single-frame files in series {uid}: {frames}" if frames else None

    @staticmethod
    def _volume(series: DicomSeries) -> CaseImage:
        return CaseImage(
            image_id=series.series_uid,
            path=Path(os.path.commonpath([str(f.parent) for f in series.files])),
            modality=series.modality,
            body_region=series.body_part,
            plane=series.plane,
            metadata={
                "dicom_files": [str(f) for f in series.files],
                "series_uid": series.series_uid,
                "series_description": series.description,
            },
        )

    @staticmethod
    def _pictures(series: DicomSeries) -> list[CaseImage]:
        single = len(series.files) == 1
        return [
            CaseImage(
                image_id=series.series_uid if single else f"{series.series_uid}/{path.name}",
                path=path,
                modality=series.modality,
                body_region=series.body_part,
                metadata={
                    "dicom_files": [str(path)],
                    "series_uid": series.series_uid,
                    "series_description": series.description,
                },
            )
            for path in series.files
        ]
