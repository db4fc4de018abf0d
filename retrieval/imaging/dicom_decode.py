"""Reading DICOM files and decoding their pixel data to float32 (Hounsfield units for CT).

Hounsfield units come from RescaleSlope (0028,1053) / RescaleIntercept (0028,1052), on the dataset
or, for enhanced multi-frame objects, in the functional groups. Compressed transfer syntaxes (JPEG,
JPEG-LS, JPEG 2000, RLE) decode through pydicom's pixel handlers and pylibjpeg's plugins.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from kgreport.json_types import JsonObject
from kgreport.retrieval.imaging.dicom_headers import functional
from kgreport.retrieval.imaging.errors import ImageDecodeError

PIXEL_TAGS: dict[str, str] = {
    "PixelData": "Pixel Data (7FE0,0010)",
    "FloatPixelData": "Float Pixel Data (7FE0,0008)",
    "DoubleFloatPixelData": "Double Float Pixel Data (7FE0,0009)",
}


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def short(err: BaseException, limit: int = 300) -> str:
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
        raise ImageDecodeError(f"{path}: unreadable DICOM ({type(err).__name__}: {short(err)})") from err


@contextmanager
def _transform(path: Path, tag: str) -> Iterator[None]:
    """One pixel transform of the file's own (a LUT, a rescale): whatever a malformed attribute makes it
    raise becomes the unreadable-image error that names the file and the attribute."""
    try:
        yield
    except ImageDecodeError:
        raise
    except Exception as err:  # pydicom and numpy raise IndexError, TypeError, struct.error, ... on bad LUTs
        raise ImageDecodeError(f"{path}: cannot apply its {tag}: {short(err)}") from err


def _rescale(ds: Dataset, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame (slopes, intercepts), or None when the file has no rescale."""
    slopes, intercepts = [], []
    for frame in range(frames):
        slope = functional(ds, "PixelValueTransformationSequence", "RescaleSlope", frame)
        intercept = functional(ds, "PixelValueTransformationSequence", "RescaleIntercept", frame)
        if slope is None and intercept is None:
            return None
        slopes.append(float(slope) if slope is not None else 1.0)
        intercepts.append(float(intercept) if intercept is not None else 0.0)
    rescale = np.asarray(slopes, np.float32), np.asarray(intercepts, np.float32)
    if not (np.isfinite(rescale[0]).all() and np.isfinite(rescale[1]).all()):
        raise ValueError("not a finite number")  # 1e999 would make every pixel inf, the picture blank
    return rescale


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def decode_pixels(ds: Dataset, path: Path, frames: list[int] | None = None) -> tuple[np.ndarray, bool, JsonObject]:
    """Pixel values as float32 (HU for CT) with frames first, whether they are HU, and notes.

    `frames`: of a multi-frame file, only these frames are decoded, in this order (a volume too large
    to hold whole); each frame is decoded on its own, so the rest never takes memory.
    """
    present = [keyword for keyword in PIXEL_TAGS if keyword in ds]
    if not present:
        hint = " (the image header is there: the file may be truncated)" if "Rows" in ds else ""
        raise ImageDecodeError(f"{path}: no Pixel Data (7FE0,0010){hint}")
    try:
        raw = ds.pixel_array if frames is None else np.stack([pixel_array(ds, index=i) for i in frames])
    except Exception as err:  # pydicom raises many types for broken or undecodable pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        raise ImageDecodeError(f"{path}: cannot decode {PIXEL_TAGS[present[0]]} ({name}): {short(err)}") from err
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    count = int(ds.get("NumberOfFrames") or 1)
    if photometric == "PALETTE COLOR":
        with _transform(path, "Red Palette Color LUT (0028,1201)"):
            raw = apply_color_lut(raw, ds)
        # A palette is a rendered colour mapping, so display-ready; 16-bit LUT entries scale to 8 bits.
        raw = (raw / 257.0 if raw.max(initial=0) > 255 else raw).round().astype(np.uint8)
    if raw.ndim == (4 if count > 1 else 3):  # RGB (pydicom already converted YBR): no rescale, no HU
        return raw.astype(np.float32), False, {"display_ready": bool(raw.dtype == np.uint8)}
    notes: JsonObject = {}
    with _transform(path, "Rescale Slope/Intercept (0028,1053)/(0028,1052)"):
        rescale = _rescale(ds, count)
    rescale_type = str(functional(ds, "PixelValueTransformationSequence", "RescaleType") or "").strip().upper()
    modality = str(ds.get("Modality") or "").strip().upper()
    # CT images imply HU when Rescale Type (0028,1054) is absent; "US" (unspecified) marks derived maps.
    is_hu = rescale is not None and (rescale_type == "HU" or (modality == "CT" and rescale_type == ""))
    array = raw.astype(np.float32)
    if photometric == "MONOCHROME1" and not is_hu:  # high stored values are dark: flip within the stored range
        with _transform(path, "Bits Stored (0028,0101)"):
            low, high = _stored_range(ds)
        array = (low + high) - array
        notes["inverted"] = "MONOCHROME1"
    if "ModalityLUTSequence" in ds:
        with _transform(path, "Modality LUT Sequence (0028,3000)"):
            array = apply_modality_lut(array.astype(raw.dtype), ds).astype(np.float32)
    elif rescale is not None:
        slopes, intercepts = rescale if frames is None else (rescale[0][frames], rescale[1][frames])
        if count > 1:
            array = array * slopes[:, None, None] + intercepts[:, None, None]
        else:
            array = array * slopes[0] + intercepts[0]
    return array, is_hu, notes
