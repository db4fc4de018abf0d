"""DICOM decoding: single files, and series assembled from a folder.

Files are read and their pixels decoded in `dicom_decode`; what headers say about identity and slice
geometry is in `dicom_headers` (both re-exported here). A series is ordered from its headers alone
(stop_before_pixels), and only the files whose slices are kept are decoded: all of them for a volume
that fits the memory budget, else the slices to embed and a sample (`budget.slices_to_read`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from kgreport.json_types import JsonObject
from kgreport.retrieval.imaging.budget import (
    DEFAULT_MAX_PIXELS,
    check_plane,
    check_volume,
    slices_to_read,
    volume_sample,
)
from kgreport.retrieval.imaging.decoded import DecodedImage, finite_float32
from kgreport.retrieval.imaging.dicom_decode import PIXEL_TAGS, decode_pixels, is_dicom_file, read_dataset
from kgreport.retrieval.imaging.dicom_headers import (
    floats,
    functional,
    header_info,
    order_slices,
    pixel_spacing,
    plane_of,
    slice_normal,
    text,
    volume_spacing,
    z_spacing,
)
from kgreport.retrieval.imaging.errors import ImageDecodeError, ImageNotFoundError
from kgreport.retrieval.imaging.slices import DEFAULT_SLICES

__all__ = [
    "NON_IMAGE_MODALITIES",
    "PIXEL_TAGS",
    "PROJECTION_MODALITIES",
    "DicomScan",
    "DicomSeries",
    "SliceHeader",
    "find_series",
    "is_dicom_file",
    "load_series",
    "plane_of",
    "read_dataset",
    "read_dicom_file",
    "scan_dicom_folder",
    "slice_normal",
]

# Series of these modalities hold no picture of the patient: reports, presentation states, key
# object selections, RT plans/structures/doses, segmentations, registrations, waveforms.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "REG", "SEG", "AU", "ECG", "HD"}
)
# Projection and photographic modalities: every file of a series is its own picture (a PA and a
# lateral chest film may share a series and differ in size), never a slice of a volume.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "US", "IO", "PX", "OT", "XC", "ES", "GM", "SM"})


def _slice_bytes(ds: Dataset) -> int:
    """One frame's size as float32 values (three per pixel for colour), from the header alone."""
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    colour = (
        int(ds.get("SamplesPerPixel") or 1) > 1
        or str(ds.get("PhotometricInterpretation") or "").strip().upper() == "PALETTE COLOR"
    )
    return rows * columns * (3 if colour else 1) * 4


def read_dicom_file(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, volume_slices: int = DEFAULT_SLICES
) -> DecodedImage:
    """One DICOM file: a 2D image, or a (Z, H, W) volume when it has several frames.

    Refused (ImageDecodeError) when a frame has more than `max_pixels` pixels. Of a multi-frame file
    too large to hold whole, only the frames `to_slices(k=volume_slices)` embeds and a sample are decoded.
    """
    path = Path(path)
    ds = read_dataset(path)
    frames = int(ds.get("NumberOfFrames") or 1)
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    orientation = floats(functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if frames == 1:
        check_plane(path, columns, rows, max_pixels)
        order, sorted_positions, how, wanted = [0], None, "file", None
    else:
        check_volume(path, frames, rows, columns, max_pixels)
        positions = [
            floats(functional(ds, "PlanePositionSequence", "ImagePositionPatient", i), 3) for i in range(frames)
        ]
        order, sorted_positions, how = order_slices(positions, orientation, [None] * frames)
        wanted = slices_to_read(path, frames, _slice_bytes(ds), volume_slices)
    picked = [order[i] for i in wanted] if wanted is not None else None
    array, is_hu, notes = decode_pixels(ds, path, picked)
    array, replaced = finite_float32(array)
    metadata: JsonObject = {**header_info(ds), **notes}
    if replaced:
        metadata["non_finite_replaced"] = replaced
    if orientation:
        metadata["orientation"] = orientation
        metadata["plane"] = plane_of(orientation)
    if frames == 1:
        return DecodedImage(
            pixels=array,
            kind="image",
            source=str(path),
            is_hu=is_hu,
            spacing=pixel_spacing(ds),
            modality=text(ds, "Modality"),
            metadata=metadata,
        )
    z, z_notes = z_spacing(sorted_positions, ds)
    metadata.update(z_notes, slice_order=how, n_slices=frames)
    if sorted_positions is not None:
        metadata["slice_positions"] = sorted_positions
    return DecodedImage(
        pixels=array if picked is not None else np.ascontiguousarray(array[order]),
        kind="volume",
        source=str(path),
        is_hu=is_hu,
        spacing=volume_spacing(ds, z),
        modality=text(ds, "Modality"),
        metadata=metadata,
        sample=volume_sample(wanted, frames, metadata),
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
        position=floats(ds.get("ImagePositionPatient"), 3),
        orientation=floats(ds.get("ImageOrientationPatient"), 6),
    )


def scan_dicom_folder(folder: str | Path) -> DicomScan:
    """Read the headers (not the pixels) of every DICOM file under `folder`, grouped by SeriesInstanceUID.

    Files without the DICOM preamble or a `.dcm` suffix are ignored silently (reports, thumbnails);
    DICOMDIR index files are ignored too. Series and their files come back sorted, for stable ids.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageNotFoundError(f"{folder}: no such folder")
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
            uid = text(ds, "SeriesInstanceUID") or f"no-series-uid:{path.parent}"
            series = groups.get(uid)
            if series is None:
                info = header_info(ds)
                series = groups[uid] = DicomSeries(
                    series_uid=uid,
                    study_uid=info.get("study_uid"),
                    patient_id=info.get("patient_id"),
                    modality=text(ds, "Modality"),
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


def load_series(
    files: list[Path] | list[str], *, max_pixels: int = DEFAULT_MAX_PIXELS, volume_slices: int = DEFAULT_SLICES
) -> DecodedImage:
    """Read the slices of one series into a (Z, H, W) volume ordered along the slice normal.

    Headers are read first (without pixels) to check sizes and order the slices; then only the files
    whose slices are kept are decoded: all of them, unless the volume is too large to hold whole
    (`budget.slices_to_read`). A one-file series is read as that file (a multi-frame file is already a
    volume). Refused (ImageDecodeError) when a slice has more than `max_pixels` pixels.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise ImageDecodeError("empty DICOM series: no files given")
    if len(paths) == 1:
        return read_dicom_file(paths[0], max_pixels=max_pixels, volume_slices=volume_slices)
    datasets = [read_dataset(p, headers_only=True) for p in paths]
    size = Counter((ds.get("Rows"), ds.get("Columns")) for ds in datasets).most_common(1)[0][0]
    for path, ds in zip(paths, datasets, strict=True):
        if (ds.get("Rows"), ds.get("Columns")) != size:
            raise ImageDecodeError(
                f"{path}: Rows/Columns (0028,0010)/(0028,0011) {ds.get('Rows')}x{ds.get('Columns')} "
                f"differ from the series' {size[0]}x{size[1]}"
            )
        if int(ds.get("NumberOfFrames") or 1) > 1:
            raise ImageDecodeError(f"{path}: Number of Frames (0028,0008) {ds.NumberOfFrames} in a multi-file series")
    check_volume(paths[0].parent, len(paths), int(size[0] or 0), int(size[1] or 0), max_pixels)
    headers = [_slice_header(p, ds) for p, ds in zip(paths, datasets, strict=True)]
    orientation = headers[0].orientation
    order, sorted_positions, how = order_slices(
        [h.position for h in headers], orientation, [h.instance_number for h in headers]
    )
    wanted = slices_to_read(paths[0].parent, len(paths), max(_slice_bytes(ds) for ds in datasets), volume_slices)
    picked = [order[i] for i in wanted] if wanted is not None else order
    pixels, is_hu, notes = _decode_files([paths[i] for i in picked])
    first = datasets[order[0]]
    z, z_notes = z_spacing(sorted_positions, first)
    metadata: JsonObject = {
        **header_info(first),
        **notes,
        **z_notes,
        "n_slices": len(paths),
        "slice_order": how,
    }
    if orientation:
        metadata["orientation"] = orientation
        metadata["plane"] = plane_of(orientation)
    if sorted_positions is not None:
        metadata["slice_positions"] = sorted_positions  # mm along the normal, ascending
    return DecodedImage(
        pixels=pixels,
        kind="volume",
        source=str(os.path.commonpath([str(p.parent) for p in paths])),
        is_hu=is_hu,
        spacing=volume_spacing(first, z),
        modality=text(first, "Modality"),
        metadata=metadata,
        sample=volume_sample(wanted, len(paths), metadata),
    )


def _decode_files(paths: list[Path]) -> tuple[np.ndarray, bool, JsonObject]:
    """The slices of these single-frame files stacked in this order, whether all are HU, and notes.

    Each file is read and decoded in turn into one preallocated array, so peak memory is the volume
    plus one file.
    """
    pixels: np.ndarray | None = None
    all_hu, notes = True, {}
    for row, path in enumerate(paths):
        array, is_hu, slice_notes = decode_pixels(read_dataset(path), path)
        if pixels is None:
            pixels = np.empty((len(paths), *array.shape), dtype=np.float32)
        elif array.shape != pixels.shape[1:]:  # same Rows/Columns, but Samples per Pixel (0028,0002) differs
            raise ImageDecodeError(f"{path}: Samples per Pixel (0028,0002) differs from the series' first slice")
        pixels[row] = array
        all_hu = all_hu and is_hu
        notes.update(slice_notes)
    assert pixels is not None  # paths is never empty
    pixels, replaced = finite_float32(pixels)
    if replaced:
        notes["non_finite_replaced"] = replaced
    return pixels, all_hu, notes
