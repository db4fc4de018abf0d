"""Archive readers: MedPix 2.0 folders, JSONL/CSV manifests, DICOM folders, NIfTI folders."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from kgreport.indexing.archives.base import Archive, ArchiveError

ArchiveFormat = Literal["medpix", "manifest", "dicom", "nifti"]
FORMATS: tuple[str, ...] = get_args(ArchiveFormat)


def detect_format(path: Path) -> str:
    """Guess an archive's format from what its path holds."""
    if path.is_file():
        if path.suffix.lower() in {".jsonl", ".ndjson", ".json", ".csv"}:
            return "manifest"
        raise ArchiveError(f"{path}: a file archive must be a .jsonl or .csv manifest")
    if not path.is_dir():
        raise ArchiveError(f"{path}: archive not found")
    if any(path.glob("data_*.jsonl")):
        return "medpix"
    if any(path.rglob("*.nii")) or any(path.rglob("*.nii.gz")):
        return "nifti"
    return "dicom"


def open_archive(
    path: str | Path, format: str | None = None, *, split: str = "train", limit: int | None = None
) -> Archive:
    """Open `path` as an archive of the given (or detected) format."""
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt == "medpix":
        from kgreport.indexing.archives.medpix import MedPixArchive

        return MedPixArchive(path, split, limit=limit)
    if fmt == "manifest":
        from kgreport.indexing.archives.manifest import ManifestArchive

        return ManifestArchive(path)
    if fmt == "dicom":
        from kgreport.indexing.archives.dicom_folder import DicomFolderArchive

        return DicomFolderArchive(path)
    if fmt == "nifti":
        from kgreport.indexing.archives.nifti_folder import NiftiFolderArchive

        return NiftiFolderArchive(path)
    raise ArchiveError(f"unknown archive format {fmt!r}; expected one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "Archive", "ArchiveFormat", "ArchiveError", "detect_format", "open_archive"]
