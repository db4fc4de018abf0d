"""DICOM decoding: single files, and series assembled from a folder.

Hounsfield units come from RescaleSlope (0028,1053) / RescaleIntercept (0028,1052), on the dataset
or, for enhanced multi-frame objects, in the functional groups. Compressed transfer syntaxes (JPEG,
JPEG-LS, JPEG 2000, RLE) decode through pydicom's pixel handlers and pylibjpeg's plugins. Slices of a
series are ordered by their position along the slice normal (ImagePositionPatient (0020,0032) · the
normal of ImageOrientationPatient (0020,0037)), falling back to InstanceNumber (0020,0013).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from retrieval.imaging.decoded import DecodedImage, finite_float32
from retrieval.imaging.errors import ImageDecodeError

PIXEL_TAGS: dict[str, str] = {
    "PixelData": "Pixel Data (7FE0,0010)",
    "FloatPixelData": "Float Pixel Data (7FE0,0008)",
    "DoubleFloatPixelData": "Double Float Pixel Data (7FE0,0009)",
}
# Series of these modalities hold no picture of the patient: reports, presentation states, key
# object selections, RT plans/structures/doses, segmentations, registrations, waveforms.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "REG", "SEG", "AU", "ECG", "HD"}
)
# Projection and photographic modalities: every file of a series is its own picture (a PA and a
# lateral chest film may share a series and differ in size), never a slice of a volume.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "US", "IO", "PX", "OT", "XC", "ES", "GM", "SM"})


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _short(err: BaseException, limit: int = 300) -> str:
    """An exception as one line (pydicom's decoder errors span several)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_without_preamble(path: Path, headers_only: bool) -> Dataset | None:
    """Old ACR-NEMA style files lack the preamble and file meta; accept them only if they look like images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=headers_only)
    except Exception:  # force=True on a text file fails in many ways; all mean "not DICOM"
        return None
    if "SOPClassUID" not in ds and not ("Rows" in ds and "Columns" in ds):
        return None
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:  # decoding needs one: use the encoding the reader found
        implicit, little = ds.original_encoding
        if implicit or implicit is None:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    return ds


def read_dataset(path: Path, *, headers_only: bool = False) -> Dataset:
    """pydicom's dataset of `path`; ImageDecodeError (naming the file) when it is not DICOM or unreadable."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except InvalidDicomError as err:
        ds = _read_without_preamble(path, headers_only)
        if ds is None:
            raise ImageDecodeError(f"{path}: not a DICOM file (no 'DICM' preamble and no DICOM image header)") from err
        return ds
    except Exception as err:  # pydicom raises many types for damaged files (EOFError, struct.error, ...)
        raise ImageDecodeError(f"{path}: unreadable DICOM ({type(err).__name__}: {_short(err)})") from err


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return (str(value).strip() or None) if value is not None else None


def _header_info(ds: Dataset) -> dict[str, Any]:
    body_part = _text(ds, "BodyPartExamined")
    info = {
        "patient_id": _text(ds, "PatientID"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "accession_number": _text(ds, "AccessionNumber"),
        "body_part": body_part.lower() if body_part else None,
        "series_description": _text(ds, "SeriesDescription"),
    }
    return {k: v for k, v in info.items() if v}


def _functional(ds: Dataset, sequence: str, keyword: str, frame: int = 0) -> Any:
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


def _rescale(ds: Dataset, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame (slopes, intercepts), or None when the file has no rescale."""
    slopes, intercepts = [], []
    for frame in range(frames):
        slope = _functional(ds, "PixelValueTransformationSequence", "RescaleSlope", frame)
        intercept = _functional(ds, "PixelValueTransformationSequence", "RescaleIntercept", frame)
        if slope is None and intercept is None:
            return None
        slopes.append(float(slope) if slope is not None else 1.0)
        intercepts.append(float(intercept) if intercept is not None else 0.0)
    return np.asarray(slopes, np.float32), np.asarray(intercepts, np.float32)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _decode_pixels(ds: Dataset, path: Path) -> tuple[np.ndarray, bool, dict[str, Any]]:
    """Pixel values as float32 (HU for CT) with frames first, whether they are HU, and notes."""
    present = [keyword for keyword in PIXEL_TAGS if keyword in ds]
    if not present:
        hint = " (the image header is there: the file may be truncated)" if "Rows" in ds else ""
        raise ImageDecodeError(f"{path}: no Pixel Data (7FE0,0010){hint}")
    try:
        raw = ds.pixel_array
    except Exception as err:  # pydicom raises many types for broken or undecodable pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        raise ImageDecodeError(f"{path}: cannot decode {PIXEL_TAGS[present[0]]} ({name}): {_short(err)}") from err
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    frames = int(ds.get("NumberOfFrames") or 1)
    if photometric == "PALETTE COLOR":
        try:
            raw = apply_color_lut(raw, ds)
        except Exception as err:
            raise ImageDecodeError(f"{path}: cannot apply Red Palette Color LUT (0028,1201): {_short(err)}") from err
        # A palette is a rendered colour mapping, so display-ready; 16-bit LUT entries scale to 8 bits.
        raw = (raw / 257.0 if raw.max(initial=0) > 255 else raw).round().astype(np.uint8)
    if raw.ndim == (4 if frames > 1 else 3):  # RGB (pydicom already converted YBR): no rescale, no HU
        return raw.astype(np.float32), False, {"display_ready": bool(raw.dtype == np.uint8)}
    notes: dict[str, Any] = {}
    rescale = _rescale(ds, frames)
    rescale_type = str(_functional(ds, "PixelValueTransformationSequence", "RescaleType") or "").strip().upper()
    modality = str(ds.get("Modality") or "").strip().upper()
    # CT images imply HU when Rescale Type (0028,1054) is absent; "US" (unspecified) marks derived maps.
    is_hu = rescale is not None and (rescale_type == "HU" or (modality == "CT" and rescale_type == ""))
    array = raw.astype(np.float32)
    if photometric == "MONOCHROME1" and not is_hu:  # high stored values are dark: flip within the stored range
        low, high = _stored_range(ds)
        array = (low + high) - array
        notes["inverted"] = "MONOCHROME1"
    if "ModalityLUTSequence" in ds:
        array = apply_modality_lut(array.astype(raw.dtype), ds).astype(np.float32)
    elif rescale is not None:
        slopes, intercepts = rescale
        if frames > 1:
            array = array * slopes[:, None, None] + intercepts[:, None, None]
        else:
            array = array * slopes[0] + intercepts[0]
    return array, is_hu, notes


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
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


def _order(
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


def _z_spacing(sorted_positions: list[float] | None, ds: Dataset) -> tuple[float | None, dict[str, Any]]:
    """Slice spacing in mm (median gap of positions, else SpacingBetweenSlices/SliceThickness) and notes."""
    notes: dict[str, Any] = {}
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
    fallback = _functional(ds, "PixelMeasuresSequence", "SpacingBetweenSlices") or _functional(
        ds, "PixelMeasuresSequence", "SliceThickness"
    )
    try:
        return (float(fallback) if fallback else None), notes
    except (TypeError, ValueError):
        return None, notes


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    spacing = _floats(_functional(ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing is None:  # projection radiographs carry ImagerPixelSpacing only
        spacing = _floats(ds.get("ImagerPixelSpacing"), 2)
    return (spacing[0], spacing[1]) if spacing and min(spacing) > 0 else None  # zero spacing means "unknown"


def _volume_spacing(ds: Dataset, z: float | None) -> tuple[float, ...] | None:
    in_plane = _pixel_spacing(ds)
    return (z, *in_plane) if in_plane and z else None


def read_dicom_file(path: str | Path) -> DecodedImage:
    """One DICOM file: a 2D image, or a (Z, H, W) volume when it has several frames."""
    path = Path(path)
    ds = read_dataset(path)
    array, is_hu, notes = _decode_pixels(ds, path)
    array, replaced = finite_float32(array)
    metadata: dict[str, Any] = {**_header_info(ds), **notes}
    if replaced:
        metadata["non_finite_replaced"] = replaced
    frames = int(ds.get("NumberOfFrames") or 1)
    orientation = _floats(_functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if orientation:
        metadata["orientation"] = orientation
        metadata["plane"] = plane_of(orientation)
    if frames == 1:
        return DecodedImage(
            pixels=array,
            kind="image",
            source=str(path),
            is_hu=is_hu,
            spacing=_pixel_spacing(ds),
            modality=_text(ds, "Modality"),
            metadata=metadata,
        )
    positions = [_floats(_functional(ds, "PlanePositionSequence", "ImagePositionPatient", i), 3) for i in range(frames)]
    order, sorted_positions, how = _order(positions, orientation, [None] * frames)
    z, z_notes = _z_spacing(sorted_positions, ds)
    metadata.update(z_notes, slice_order=how, n_slices=frames)
    if sorted_positions is not None:
        metadata["slice_positions"] = sorted_positions
    return DecodedImage(
        pixels=np.ascontiguousarray(array[order]),
        kind="volume",
        source=str(path),
        is_hu=is_hu,
        spacing=_volume_spacing(ds, z),
        modality=_text(ds, "Modality"),
        metadata=metadata,
    )


@dataclass(frozen=True)
class SliceHeader:
    """What a header-only read says about one file of a series."""

    path: Path
    rows: int
    columns: int
    frames: int = 1
    instance_number: int | None = None
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None


@dataclass
class DicomSeries:
    """The files of one series (headers read, pixels not) and what their headers say."""

    series_uid: str
    study_uid: str | None = None
    patient_id: str | None = None
    modality: str | None = None
    body_part: str | None = None
    accession_number: str | None = None
    description: str | None = None
    files: list[Path] = field(default_factory=list)
    headers: dict[Path, SliceHeader] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        """False for series that hold no picture (SR, PR, KO, SEG, RT objects)."""
        return (self.modality or "").upper() not in NON_IMAGE_MODALITIES

    @property
    def is_projection(self) -> bool:
        """True when each file is its own picture (radiographs, ultrasound, photos), not a slice."""
        return (self.modality or "").upper() in PROJECTION_MODALITIES

    @property
    def plane(self) -> str | None:
        return plane_of(self.headers[self.files[0]].orientation) if self.files else None

    def size_problem(self) -> str | None:
        """The first file whose Rows/Columns are missing or differ from the size most files share.

        Comparing with the common size, not the first file's, keeps one truncated first file from
        making every other file look wrong.
        """
        sizes = Counter((h.rows, h.columns) for h in self.headers.values())
        rows, columns = sizes.most_common(1)[0][0] if sizes else (0, 0)
        for path in self.files:
            header = self.headers[path]
            if not header.rows or not header.columns:
                return f"{path}: no Rows/Columns (0028,0010)/(0028,0011) in the header"
            if (header.rows, header.columns) != (rows, columns):
                return (
                    f"{path}: Rows/Columns (0028,0010)/(0028,0011) {header.rows}x{header.columns} "
                    f"differ from the series' {rows}x{columns}"
                )
        return None

    def frames_problem(self) -> str | None:
        """The first multi-frame file of a series of several files (its frames are not slices)."""
        if len(self.files) < 2:
            return None
        for path in self.files:
            frames = self.headers[path].frames
            if frames > 1:
                return f"{path}: Number of Frames (0028,0008) {frames} in a series of {len(self.files)} files"
        return None


@dataclass
class DicomScan:
    """Series found under a folder, and the DICOM files whose headers could not be read (with why)."""

    series: list[DicomSeries]
    unreadable: list[tuple[Path, str]]


def _slice_header(path: Path, ds: Dataset) -> SliceHeader:
    number = ds.get("InstanceNumber")
    try:
        instance = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        instance = None
    return SliceHeader(
        path=path,
        rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0),
        frames=int(ds.get("NumberOfFrames") or 1),
        instance_number=instance,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
    )


def scan_dicom_folder(folder: str | Path) -> DicomScan:
    """Read the headers (not the pixels) of every DICOM file under `folder`, grouped by SeriesInstanceUID.

    Files without the DICOM preamble or a `.dcm` suffix are ignored silently (reports, thumbnails);
    DICOMDIR index files are ignored too. Series and their files come back sorted, for stable ids.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    groups: dict[str, DicomSeries] = {}
    unreadable: list[tuple[Path, str]] = []
    for dirpath, dirnames, names in os.walk(folder):
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            if name.upper().startswith("DICOMDIR") or not (path.suffix.lower() == ".dcm" or is_dicom_file(path)):
                continue
            try:
                ds = read_dataset(path, headers_only=True)
            except ImageDecodeError as err:
                unreadable.append((path, str(err)))
                continue
            uid = _text(ds, "SeriesInstanceUID") or f"no-series-uid:{path.parent}"
            series = groups.get(uid)
            if series is None:
                info = _header_info(ds)
                series = groups[uid] = DicomSeries(
                    series_uid=uid,
                    study_uid=info.get("study_uid"),
                    patient_id=info.get("patient_id"),
                    modality=_text(ds, "Modality"),
                    body_part=info.get("body_part"),
                    accession_number=info.get("accession_number"),
                    description=info.get("series_description"),
                )
            series.files.append(path)
            series.headers[path] = _slice_header(path, ds)
    for series in groups.values():
        series.files.sort()
    return DicomScan(series=sorted(groups.values(), key=lambda s: (s.files[0], s.series_uid)), unreadable=unreadable)


def find_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series under `folder` (see `scan_dicom_folder` for the files that could not be read)."""
    return scan_dicom_folder(folder).series


def load_series(files: list[Path] | list[str]) -> DecodedImage:
    """Read the slices of one series into a (Z, H, W) volume ordered along the slice normal.

    A one-file series is read as that file (a multi-frame file is already a volume).
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise ImageDecodeError("empty DICOM series: no files given")
    if len(paths) == 1:
        return read_dicom_file(paths[0])
    datasets = [read_dataset(p) for p in paths]
    size = Counter((ds.get("Rows"), ds.get("Columns")) for ds in datasets).most_common(1)[0][0]
    for path, ds in zip(paths, datasets, strict=True):
        if (ds.get("Rows"), ds.get("Columns")) != size:
            raise ImageDecodeError(
                f"{path}: Rows/Columns (0028,0010)/(0028,0011) {ds.get('Rows')}x{ds.get('Columns')} "
                f"differ from the series' {size[0]}x{size[1]}"
            )
        if int(ds.get("NumberOfFrames") or 1) > 1:
            raise ImageDecodeError(f"{path}: Number of Frames (0028,0008) {ds.NumberOfFrames} in a multi-file series")
    headers = [_slice_header(p, ds) for p, ds in zip(paths, datasets, strict=True)]
    orientation = headers[0].orientation
    order, sorted_positions, how = _order(
        [h.position for h in headers], orientation, [h.instance_number for h in headers]
    )
    arrays, hu_flags, notes = [], [], {}
    for index in order:
        array, is_hu, slice_notes = _decode_pixels(datasets[index], paths[index])
        arrays.append(array)
        hu_flags.append(is_hu)
        notes.update(slice_notes)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:  # same Rows/Columns but one slice is colour (Samples per Pixel (0028,0002) differs)
        odd = next(paths[i] for i, a in zip(order, arrays, strict=True) if a.shape != arrays[0].shape)
        raise ImageDecodeError(f"{odd}: Samples per Pixel (0028,0002) differs from the series' first slice")
    pixels, replaced = finite_float32(np.stack(arrays))
    first = datasets[order[0]]
    z, z_notes = _z_spacing(sorted_positions, first)
    metadata: dict[str, Any] = {
        **_header_info(first),
        **notes,
        **z_notes,
        "n_slices": len(arrays),
        "slice_order": how,
    }
    if orientation:
        metadata["orientation"] = orientation
        metadata["plane"] = plane_of(orientation)
    if sorted_positions is not None:
        metadata["slice_positions"] = sorted_positions  # mm along the normal, ascending
    if replaced:
        metadata["non_finite_replaced"] = replaced
    return DecodedImage(
        pixels=pixels,
        kind="volume",
        source=str(os.path.commonpath([str(p.parent) for p in paths])),
        is_hu=all(hu_flags),
        spacing=_volume_spacing(first, z),
        modality=_text(first, "Modality"),
        metadata=metadata,
    )
