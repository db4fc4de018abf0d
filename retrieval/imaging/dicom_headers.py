"""What DICOM headers say: identifiers, values from enhanced functional groups, and slice geometry.

Slices of a series are ordered by their position along the slice normal (ImagePositionPatient
(0020,0032) · the normal of ImageOrientationPatient (0020,0037)), falling back to InstanceNumber
(0020,0013). Everything here works on header-only datasets (read with stop_before_pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from kgreport.json_types import JsonObject


def text(ds: Dataset, keyword: str) -> str | None:
    """A header value as stripped text; None when absent or blank."""
    value = ds.get(keyword)
    return (str(value).strip() or None) if value is not None else None


def header_info(ds: Dataset) -> dict[str, str]:
    """The identifiers a decoded image's metadata carries (patient, study, series, body part), when set."""
    body_part = text(ds, "BodyPartExamined")
    info = {
        "patient_id": text(ds, "PatientID"),
        "study_uid": text(ds, "StudyInstanceUID"),
        "series_uid": text(ds, "SeriesInstanceUID"),
        "accession_number": text(ds, "AccessionNumber"),
        "body_part": body_part.lower() if body_part else None,
        "series_description": text(ds, "SeriesDescription"),
    }
    return {k: v for k, v in info.items() if v}


def functional(ds: Dataset, sequence: str, keyword: str, frame: int = 0) -> Any:
    """A value from the dataset, else from an enhanced multi-frame's per-frame or shared functional groups."""
    value = ds.get(keyword)
    if value not in (None, ""):
        return value
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and index < len(items):
            inner = items[index].get(sequence)
            if inner and inner[0].get(keyword) not in (None, ""):
                return inner[0].get(keyword)
    return None


def floats(value: Any, count: int) -> tuple[float, ...] | None:
    """A multi-valued DS as floats, or None when absent or malformed."""
    try:
        numbers = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray | None:
    """Unit normal of an ImageOrientationPatient, signed so its largest component is positive.

    The sign makes "ascending position" run inferior → superior for axial slices (+z in DICOM's LPS
    frame), right → left for sagittal and anterior → posterior for coronal, whatever the row direction.
    """
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return None
    normal /= norm
    return normal if normal[int(np.argmax(np.abs(normal)))] > 0 else -normal


def plane_of(orientation: tuple[float, ...] | None) -> str | None:
    """The slice plane (axial, coronal or sagittal): the dominant axis of the slice normal."""
    normal = slice_normal(orientation) if orientation else None
    return None if normal is None else ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def order_slices(
    positions: list[tuple[float, ...] | None],
    orientation: tuple[float, ...] | None,
    instance_numbers: list[int | None],
) -> tuple[list[int], list[float] | None, str]:
    """Indices in slice order, their positions along the normal (when known), and how they were ordered."""
    normal = slice_normal(orientation) if orientation else None
    known = [p for p in positions if p is not None]
    if normal is not None and len(known) == len(positions):
        keys = [float(np.dot(normal, p)) for p in known]
        order = sorted(range(len(keys)), key=lambda i: keys[i])
        return order, [keys[i] for i in order], "position"
    numbers = [n for n in instance_numbers if n is not None]
    if len(numbers) == len(instance_numbers):
        return sorted(range(len(numbers)), key=lambda i: numbers[i]), None, "instance_number"
    return list(range(len(positions))), None, "file"


def z_spacing(sorted_positions: list[float] | None, ds: Dataset) -> tuple[float | None, JsonObject]:
    """Slice spacing in mm (median gap of positions, else SpacingBetweenSlices/SliceThickness) and notes."""
    notes: JsonObject = {}
    if sorted_positions and len(sorted_positions) > 1:
        gaps = np.diff(sorted_positions)
        positive = gaps[gaps > 1e-3]
        if len(positive) < len(gaps):
            notes["duplicate_positions"] = int(len(gaps) - len(positive))
        if len(positive):
            median = float(np.median(positive))
            if float(positive.max()) > 1.5 * median or float(positive.min()) < median / 1.5:
                notes["irregular_spacing"] = True  # e.g. a gap in the series; z spacing is the typical one
            return median, notes
    fallback = functional(ds, "PixelMeasuresSequence", "SpacingBetweenSlices") or functional(
        ds, "PixelMeasuresSequence", "SliceThickness"
    )
    try:
        return (float(fallback) if fallback else None), notes
    except (TypeError, ValueError):
        return None, notes


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    spacing = floats(functional(ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing is None:  # projection radiographs carry ImagerPixelSpacing only
        spacing = floats(ds.get("ImagerPixelSpacing"), 2)
    return (spacing[0], spacing[1]) if spacing and min(spacing) > 0 else None  # zero spacing means "unknown"


def volume_spacing(ds: Dataset, z: float | None) -> tuple[float, ...] | None:
    in_plane = pixel_spacing(ds)
    return (z, *in_plane) if in_plane and z else None
