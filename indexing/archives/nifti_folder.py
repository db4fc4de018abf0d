"""A folder of NIfTI volumes: one case per `.nii`/`.nii.gz` file (searched recursively).

The case id is the file name without its NIfTI suffix; the report is the archive's
`reports.jsonl`/`reports.csv` row for that id, else a `<case id>.txt` beside the volume. Shapes (and,
for uncompressed files, sizes) are checked from the header alone, so a wrong-sized volume is skipped
without reading its voxels.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from indexing.archives.base import ArchiveError
from indexing.archives.sidecar_reports import (
    read_report_table,
    read_text_report,
    report_sections,
    table_labels,
    table_text,
)
from retrieval.imaging.errors import ImageDecodeError
from retrieval.imaging.nifti import is_nifti_path, nifti_stem, open_nifti
from retrieval.records import Case, CaseImage, SkippedItem


class NiftiFolderArchive:
    """Reader for a folder of NIfTI files with sidecar or tabulated reports."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArchiveError(f"{self.root}: NIfTI folder not found")
        self.name = f"nifti:{self.root.name}"
        self._reports = read_report_table(self.root)

    @cached_property
    def _files(self) -> list[Path]:
        """The NIfTI files under the root, sorted (each yields exactly one item, so this is `len`)."""
        return sorted(p for p in self.root.rglob("*") if is_nifti_path(p) and p.is_file())

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        seen: dict[str, Path] = {}
        for path in self._files:
            case_id = nifti_stem(path)
            if case_id in seen:
                yield SkippedItem(source=str(path), reason=f"duplicate case id {case_id!r} (also {seen[case_id]})")
                continue
            seen[case_id] = path
            yield self._case(path, case_id)

    def _report_value(self, path: Path, case_id: str) -> tuple[dict[str, Any], Any]:
        """(report-table row, report value): the table row for the case, else the sidecar text."""
        row = self._reports.get(case_id)
        if row is not None:
            return row, row.get("report")
        return {}, read_text_report(path.with_name(f"{case_id}.txt"))

    def _case(self, path: Path, case_id: str) -> Case | SkippedItem:
        try:
            image = open_nifti(path)  # header only
        except ImageDecodeError as err:
            return SkippedItem(source=str(path), reason=str(err))
        row, value = self._report_value(path, case_id)
        if value is None and not row:
            return SkippedItem(source=str(path), reason=f"no report for {path.name} (no {case_id}.txt, no table row)")
        report = report_sections(value)
        if report.is_empty():
            return SkippedItem(source=case_id, reason="empty report")
        modality, body_region = table_labels(row)
        shape = tuple(int(s) for s in image.shape)
        return Case(
            case_id=case_id,
            images=(
                CaseImage(
                    image_id=case_id,
                    path=path,
                    modality=modality,
                    body_region=body_region,
                    plane="axial" if len(shape) >= 3 and shape[2] > 1 else None,  # read_nifti reslices axially
                    metadata={"shape": shape},
                ),
            ),
            report=report,
            patient_id=table_text(row.get("patient_id")),
            modality=modality,
            body_region=body_region,
        )
