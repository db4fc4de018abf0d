"""DICOM decoding: single files, and series assembled from a folder.

Hounsfield units come from RescaleSlope (0028,1053) / RescaleIntercept (0028,1052). Compressed
transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through pylibjpeg's plugins. Slices of a
series are ordered by their position along the slice normal (ImagePositionPatient (0020,0032) ·
normal of ImageOrientationPatient (0020,0037)), falling back to InstanceNumber (0020,0013).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from retrieval.imaging.decoded import DecodedImage
from retrieval.imaging.errors import ImageDecodeError

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read(path: Path, *, headers_only: bool = False) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except InvalidDicomError as err:
        raise ImageDecodeError(f"{path}: not a DICOM file ({err})") from err
    except (OSError, EOFError, ValueError, TypeError, KeyError) as err:
        raise ImageDecodeError(f"{path}: unreadable DICOM ({type(err).__name__}: {err})") from err


def _header_info(ds: Dataset) -> dict[str, Any]:
    info = {
        "patient_id": ds.get("PatientID") or None,
        "study_uid": ds.get("StudyInstanceUID") or None,
        "series_uid": ds.get("SeriesInstanceUID") or None,
        "accession_number": ds.get("AccessionNumber") or None,
        "body_part": (ds.get("BodyPartExamined") or "").lower() or None,
        "series_description": ds.get("SeriesDescription") or None,
    }
    return {k: str(v) for k, v in info.items() if v}


def _pixels(ds: Dataset, path: Path) -> tuple[np.ndarray, bool]:
    """Pixel values as float32 (HU for CT) and whether they are HU."""
    if not any(tag in ds for tag in PIXEL_TAGS):
        raise ImageDecodeError(f"{path}: no Pixel Data (7FE0,0010)")
    try:
        array = ds.pixel_array
    except Exception as err:  # pydicom raises many types for broken or undecodable pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageDecodeError(f"{path}: cannot decode Pixel Data (7FE0,0010), transfer syntax {name}: {err}") from err
    array = np.asarray(array, dtype=np.float32)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "MONOCHROME1":  # inverted grayscale: high values are dark
        array = array.max() - array
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    array = array * slope + intercept
    is_hu = str(ds.get("Modality", "")) == "CT" or str(ds.get("RescaleType", "")).upper() == "HU"
    return array, is_hu


def _pixel_spacing(ds: Dataset) -> tuple[float, ...] | None:
    spacing = ds.get("PixelSpacing")
    return (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None


def read_dicom_file(path: str | Path) -> DecodedImage:
    """One DICOM file: a 2D image, or a volume when it is multi-frame."""
    path = Path(path)
    ds = _read(path)
    array, is_hu = _pixels(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    color = str(ds.get("PhotometricInterpretation", "")).startswith(("RGB", "YBR"))
    volume = frames > 1 and array.ndim == (4 if color else 3)
    spacing = _pixel_spacing(ds)
    if volume and spacing:
        thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        spacing = (thickness, *spacing)
    return DecodedImage(
        pixels=array,
        kind="volume" if volume else "image",
        source=str(path),
        is_hu=is_hu,
        spacing=spacing,
        modality=str(ds.get("Modality")) if ds.get("Modality") else None,
        metadata=_header_info(ds),
    )


@dataclass
class DicomSeries:
    """The files of one series (headers read, pixels not yet)."""

    series_uid: str
    study_uid: str | None
    patient_id: str | None
    modality: str | None
    body_part: str | None
    files: list[Path] = field(default_factory=list)
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def inconsistent_file(self) -> Path | None:
        """The first file whose Rows/Columns differ from the series' first file, if any."""
        if not self.files:
            return None
        first = self.sizes.get(self.files[0])
        return next((f for f in self.files[1:] if self.sizes.get(f) != first), None)


def find_series(folder: str | Path) -> tuple[list[DicomSeries], list[tuple[Path, str]]]:
    """Group the DICOM files under `folder` by SeriesInstanceUID (0020,000E).

    Returns the series and (file, reason) for DICOM files whose headers could not be read. Files
    without the DICOM preamble are ignored (reports, thumbnails, DICOMDIR indexes are not images).
    """
    groups: dict[str, DicomSeries] = {}
    problems: list[tuple[Path, str]] = []
    for dirpath, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(dirpath) / name
            if name.upper() == "DICOMDIR" or not (is_dicom_file(path) or path.suffix.lower() == ".dcm"):
                continue
            try:
                ds = _read(path, headers_only=True)
            except ImageDecodeError as err:
                problems.append((path, str(err)))
                continue
            uid = str(ds.get("SeriesInstanceUID") or f"no-series-uid:{path.parent}")
            series = groups.get(uid)
            if series is None:
                series = groups[uid] = DicomSeries(
                    series_uid=uid,
                    study_uid=str(ds.get("StudyInstanceUID") or "") or None,
                    patient_id=str(ds.get("PatientID") or "") or None,
                    modality=str(ds.get("Modality") or "") or None,
                    body_part=(str(ds.get("BodyPartExamined") or "").lower() or None),
                )
            series.files.append(path)
            series.sizes[path] = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    return list(groups.values()), problems


def _slice_position(ds: Dataset) -> float | None:
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if not position or not orientation or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return float(np.dot(normal, np.asarray(position, float)))


def load_series(files: list[Path] | list[str]) -> DecodedImage:
    """Read the slices of one series into a (Z, H, W) volume ordered along the slice normal."""
    if not files:
        raise ImageDecodeError("empty DICOM series")
    slices: list[tuple[float, Dataset, Path]] = []
    for index, file in enumerate(map(Path, files)):
        ds = _read(file)
        position = _slice_position(ds)
        order = position if position is not None else float(ds.get("InstanceNumber", index) or index)
        slices.append((order, ds, file))
    first_ds, first_file = slices[0][1], slices[0][2]
    size = (first_ds.get("Rows"), first_ds.get("Columns"))
    for _, ds, file in slices[1:]:
        if (ds.get("Rows"), ds.get("Columns")) != size:
            raise ImageDecodeError(
                f"{file}: Rows/Columns (0028,0010)/(0028,0011) {ds.get('Rows')}x{ds.get('Columns')} "
                f"differ from the series' {size[0]}x{size[1]} ({first_file.name})"
            )
    slices.sort(key=lambda item: item[0])
    arrays, is_hu = [], False
    for _, ds, file in slices:
        array, is_hu = _pixels(ds, file)
        if array.ndim != 2:
            raise ImageDecodeError(f"{file}: expected one 2D frame per slice, got shape {array.shape}")
        arrays.append(array)
    positions = [order for order, _, _ in slices]
    spacing = _pixel_spacing(first_ds)
    if spacing is not None:
        gaps = np.diff(positions)
        z = float(np.median(np.abs(gaps))) if len(gaps) else float(first_ds.get("SliceThickness") or 1.0)
        spacing = (z or float(first_ds.get("SliceThickness") or 1.0), *spacing)
    modality = str(first_ds.get("Modality")) if first_ds.get("Modality") else None
    return DecodedImage(
        pixels=np.stack(arrays),
        kind="volume",
        source=str(first_file.parent),
        is_hu=is_hu,
        spacing=spacing,
        modality=modality,
        metadata={**_header_info(first_ds), "n_slices": len(arrays)},
    )
