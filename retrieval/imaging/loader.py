"""One entry point for every image kind: `load_image(path)` and `load_case_image(case_image)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kgreport.json_types import JsonObject, json_list, json_text
from kgreport.retrieval.imaging.budget import DEFAULT_MAX_PIXELS, check_plane
from kgreport.retrieval.imaging.decoded import DecodedImage, finite_float32
from kgreport.retrieval.imaging.dicom import is_dicom_file, load_series, read_dicom_file, scan_dicom_folder
from kgreport.retrieval.imaging.errors import ImageDecodeError, ImageNotFoundError
from kgreport.retrieval.imaging.nifti import is_nifti_path, read_nifti
from kgreport.retrieval.imaging.slices import DEFAULT_SLICES
from kgreport.retrieval.records import CaseImage

__all__ = ["DEFAULT_MAX_PIXELS", "load_case_image", "load_image", "read_picture"]

_HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


def read_picture(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """PNG, JPEG, TIFF, BMP… via Pillow; the first frame of a multi-frame file.

    8-bit pictures are already display-ready (someone windowed them), so they are not rescaled later;
    16-bit and float pictures are raw values and get percentile scaling. Grayscale stays (H, W);
    palette, RGBA and CMYK become RGB. EXIF is neither applied nor kept (it may carry identifiers).
    """
    try:
        with Image.open(path) as image:
            check_plane(path, *image.size, max_pixels)  # the header's size: nothing is decoded yet
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
    metadata: JsonObject = {"display_ready": ready}
    if frames > 1:
        metadata["note"] = f"{frames} frames: using the first"
    if replaced:
        metadata["non_finite_replaced"] = replaced
    return DecodedImage(pixels=pixels, kind="image", source=str(path), metadata=metadata)


def _series_in_folder(folder: Path, series_uid: str | None, max_pixels: int, volume_slices: int) -> DecodedImage:
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
    decoded = load_series(chosen.files, max_pixels=max_pixels, volume_slices=volume_slices)
    if len(series) > 1:
        decoded.metadata["chosen_series"] = (
            f"{chosen.series_uid}: the largest of {len(series)} series ({len(chosen.files)} files)"
        )
    return decoded


def load_image(
    path: str | Path,
    *,
    series_uid: str | None = None,
    assume_hu: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    volume_slices: int = DEFAULT_SLICES,
) -> DecodedImage:
    """Decode a picture file, DICOM file, DICOM series folder or NIfTI file.

    A folder is read as the DICOM series `series_uid`, or its largest image series (the choice is
    recorded in `metadata["chosen_series"]`). `assume_hu` applies to NIfTI only (see `read_nifti`).
    A picture or slice over `max_pixels` pixels is refused before it is decoded. A volume too large to
    hold whole (`budget.MAX_VOLUME_BYTES`) keeps only the slices `to_slices(k=volume_slices)` embeds
    and an evenly spread sample (`DecodedImage.sample`): pass the k the caller embeds with.
    """
    path = Path(path)
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return _series_in_folder(path, series_uid, max_pixels, volume_slices)
    if is_nifti_path(path):
        return read_nifti(path, assume_hu=assume_hu, max_pixels=max_pixels, volume_slices=volume_slices)
    if path.suffix.lower() == ".dcm" or is_dicom_file(path):
        return read_dicom_file(path, max_pixels=max_pixels, volume_slices=volume_slices)
    return read_picture(path, max_pixels=max_pixels)


def load_case_image(
    image: CaseImage, *, max_pixels: int = DEFAULT_MAX_PIXELS, volume_slices: int = DEFAULT_SLICES
) -> DecodedImage:
    """Decode a stored case image: the archive's list of series files when it gave one.

    A NIfTI image of a case whose modality is CT is read as Hounsfield units: the archive, not the
    file, knows what the values are. `max_pixels` and `volume_slices` as for `load_image`.
    """
    metadata = image.metadata or {}
    files = metadata.get("dicom_files")
    if files:
        paths = [Path(str(f)) for f in json_list(files, f"image {image.image_id}: metadata dicom_files")]
        return load_series(paths, max_pixels=max_pixels, volume_slices=volume_slices)
    return load_image(
        image.path,
        series_uid=json_text(metadata.get("series_uid")),
        assume_hu=(image.modality or "").upper() == "CT",
        max_pixels=max_pixels,
        volume_slices=volume_slices,
    )
