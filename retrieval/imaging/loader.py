"""One entry point for every image kind: `load_image(path)` and `load_case_image(case_image)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from retrieval.imaging.decoded import DecodedImage, finite_float32
from retrieval.imaging.dicom import is_dicom_file, load_series, read_dicom_file, scan_dicom_folder
from retrieval.imaging.errors import ImageDecodeError
from retrieval.imaging.nifti import is_nifti_path, read_nifti
from retrieval.records import CaseImage

_HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
# A 2D picture larger than this is refused before its pixels are decoded: a 500 KB PNG can claim 13000 x 13000
# and take gigabytes as float32. Medical pictures rarely pass 40 MP (settings: KGREPORT_MAX_IMAGE_MEGAPIXELS).
DEFAULT_MAX_PIXELS = 40_000_000


def read_picture(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """PNG, JPEG, TIFF, BMP… via Pillow; the first frame of a multi-frame file.

    8-bit pictures are already display-ready (someone windowed them), so they are not rescaled later;
    16-bit and float pictures are raw values and get percentile scaling. Grayscale stays (H, W);
    palette, RGBA and CMYK become RGB. EXIF is neither applied nor kept (it may carry identifiers).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"{path}: {width} x {height} pixels is more than the {max_pixels / 1e6:g} MP a picture may have "
                    "(KGREPORT_MAX_IMAGE_MEGAPIXELS)"
                )
            image.load()
            frames = int(getattr(image, "n_frames", 1) or 1)
            if image.mode in _HIGH_DEPTH_MODES:
                pixels, ready = np.asarray(image, dtype=np.float32), False
            elif image.mode in {"L", "LA", "1"}:
                pixels, ready = np.asarray(image.convert("L"), dtype=np.float32), True
            else:
                pixels, ready = np.asarray(image.convert("RGB"), dtype=np.float32), True
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    pixels, replaced = finite_float32(pixels)
    metadata: dict[str, object] = {"display_ready": ready}
    if frames > 1:
        metadata["note"] = f"{frames} frames: using the first"
    if replaced:
        metadata["non_finite_replaced"] = replaced
    return DecodedImage(pixels=pixels, kind="image", source=str(path), metadata=metadata)


def _series_in_folder(folder: Path, series_uid: str | None) -> DecodedImage:
    """The requested series of a folder, else the image series with the most files."""
    scan = scan_dicom_folder(folder)
    series = [s for s in scan.series if s.is_image]
    if series_uid is not None:
        series = [s for s in scan.series if s.series_uid == series_uid]
    if not series:
        detail = f"; unreadable: {scan.unreadable[0][1]}" if scan.unreadable else ""
        wanted = f" with SeriesInstanceUID (0020,000E) {series_uid}" if series_uid else ""
        raise ImageDecodeError(f"{folder}: no DICOM image series{wanted} found{detail}")
    chosen = max(series, key=lambda s: len(s.files))  # max keeps the first of equals: scan order is stable
    decoded = load_series(chosen.files)
    if len(series) > 1:
        decoded.metadata["chosen_series"] = (
            f"{chosen.series_uid}: the largest of {len(series)} series ({len(chosen.files)} files)"
        )
    return decoded


def load_image(
    path: str | Path, *, series_uid: str | None = None, assume_hu: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode a picture file, DICOM file, DICOM series folder or NIfTI file.

    A folder is read as the DICOM series `series_uid`, or its largest image series (the choice is
    recorded in `metadata["chosen_series"]`). `assume_hu` applies to NIfTI only (see `read_nifti`);
    `max_pixels` to pictures only (PNG, JPEG, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return _series_in_folder(path, series_uid)
    if is_nifti_path(path):
        return read_nifti(path, assume_hu=assume_hu)
    if path.suffix.lower() == ".dcm" or is_dicom_file(path):
        return read_dicom_file(path)
    return read_picture(path, max_pixels=max_pixels)


def load_case_image(image: CaseImage, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a stored case image: the archive's list of series files when it gave one.

    A NIfTI image of a case whose modality is CT is read as Hounsfield units: the archive, not the
    file, knows what the values are.
    """
    metadata = image.metadata or {}
    files = metadata.get("dicom_files")
    if files:
        return load_series([Path(f) for f in files])
    return load_image(
        image.path,
        series_uid=metadata.get("series_uid"),
        assume_hu=(image.modality or "").upper() == "CT",
        max_pixels=max_pixels,
    )
