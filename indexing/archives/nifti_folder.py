"""A folder of NIfTI volumes: one case per `.nii`/`.nii.gz` file (searched recursively).

The case id is the file name without its NIfTI suffix; the report is the archive's
`reports.jsonl`/`reports.csv` row for that id, else a `<case id>.txt` beside the volume. Shapes (and,
for uncompressed files, sizes) are checked from the header alone, so a wrong-sized volume is skipped
without reading its voxels.

Every file stays inside the archive root: a volume or a `.txt` report that is a symlink resolving
outside it is never read, and its case is skipped with the reason (and a warning). A file name that
makes a case id breaking the id rule (`retrieval.ids`) is skipped likewise, naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from kgreport.indexing.archives.base import ArchiveError, OutsideRootError, inside_root, outside_reason, skip
from kgreport.indexing.archives.sidecar_reports import (
    ReportRow,
    read_report_table,
    read_text_report,
    report_sections,
    table_labels,
    table_patient_id,
)
from kgreport.retrieval.ids import InvalidIdError, check_id
from kgreport.retrieval.imaging.errors import ImageDecodeError
from kgreport.retrieval.imaging.nifti import is_nifti_path, nifti_stem, open_nifti
from kgreport.retrieval.records import Case, CaseImage, SkippedItem


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
        """The NIfTI files under the root, sorted (each yields exactly one item)."""
        return sorted(p for p in self.root.rglob("*") if is_nifti_path(p) and p.is_file())

    def __len__(self) -> int:
        return len(self._reports.skipped) + len(self._files)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        yield from self._reports.skipped
        seen: dict[str, Path] = {}
        for path in self._files:
            if inside_root(path, self.root) is None:
                yield skip(str(path), outside_reason("NIfTI file", path.relative_to(self.root)))
                continue
            try:
                case_id = check_id(nifti_stem(path), "case id", f"from file name {path.relative_to(self.root)}")
            except InvalidIdError as err:
                yield skip(str(path), str(err))
                continue
            if case_id in seen:
                yield SkippedItem(source=str(path), reason=f"duplicate case id {case_id!r} (also {seen[case_id]})")
                continue
            seen[case_id] = path
            yield self._case(path, case_id)

    def _case(self, path: Path, case_id: str) -> Case | SkippedItem:
        try:
            image = open_nifti(path)  # header only
        except ImageDecodeError as err:
            return SkippedItem(source=str(path), reason=str(err))
        row: ReportRow | None = self._reports.get(case_id)
        try:
            value = row.fields.get("report") if row else read_text_report(path.with_name(f"{case_id}.txt"), self.root)
            patient_id = table_patient_id(row)
        except (OutsideRootError, InvalidIdError) as err:
            return skip(case_id, str(err))
        if value is None and row is None:
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
            patient_id=patient_id,
            modality=modality,
            body_region=body_region,
        )
