"""A folder of NIfTI volumes: one case per `.nii`/`.nii.gz` file.

The case id is the file name without its NIfTI suffix; the report is a `<case id>.txt` beside the
volume or a row of the archive's `reports.jsonl`/`reports.csv`. Shapes are checked from the header
alone so a wrong-sized volume is skipped without reading its voxels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib

from indexing.archives.base import ArchiveError
from indexing.archives.sidecar_reports import read_report_table, read_text_report
from indexing.reports import split_report
from retrieval.records import Case, CaseImage, SkippedItem


def case_id_of(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


class NiftiFolderArchive:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArchiveError(f"{self.root}: NIfTI folder not found")
        self.name = f"nifti:{self.root.name}"
        self._files = sorted(p for p in self.root.rglob("*") if p.name.lower().endswith((".nii", ".nii.gz")))
        self._reports = read_report_table(self.root)

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        for path in self._files:
            yield self._case(path)

    def _case(self, path: Path) -> Case | SkippedItem:
        case_id = case_id_of(path)
        try:
            shape = tuple(nib.load(path).shape)  # type: ignore[attr-defined]
        except Exception as err:  # nibabel raises several types for broken headers
            return SkippedItem(source=str(path), reason=f"unreadable NIfTI header: {err}")
        if len(shape) not in (2, 3, 4) or min(shape) < 1:
            return SkippedItem(source=str(path), reason=f"unsupported volume shape {shape}")
        row = self._reports.get(case_id, {})
        text = row.get("report") if row else read_text_report(path.with_name(f"{case_id}.txt"))
        if text is None:
            return SkippedItem(source=case_id, reason=f"no report for {path.name}")
        report = split_report(str(text))
        if report.is_empty():
            return SkippedItem(source=case_id, reason="empty report")
        return Case(
            case_id=case_id,
            report=report,
            images=(
                CaseImage(
                    image_id=case_id,
                    path=path,
                    modality=row.get("modality") or None,
                    body_region=row.get("body_region") or None,
                ),
            ),
            patient_id=str(row["patient_id"]) if row.get("patient_id") else None,
            modality=row.get("modality") or None,
            body_region=row.get("body_region") or None,
        )
