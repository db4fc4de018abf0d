"""One entry point for every image kind: `load_image(path)` and `load_case_image(case_image)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from retrieval.imaging.decoded import DecodedImage
from retrieval.imaging.dicom import find_series, is_dicom_file, load_series, read_dicom_file
from retrieval.imaging.errors import ImageDecodeError
from retrieval.imaging.nifti import is_nifti_path, read_nifti
from retrieval.records import CaseImage

Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs rather than exhaust memory


def read_picture(path: Path) -> DecodedImage:
    """PNG, JPEG, TIFF, BMP… via Pillow. 8-bit pictures are already display-ready (windowed)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
                pixels = np.asarray(image, dtype=np.float32)
                ready = False
            else:
                converted = image.convert("L") if image.mode in {"L", "LA", "1"} else image.convert("RGB")
                pixels = np.asarray(converted, dtype=np.float32)
                ready = True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    return DecodedImage(pixels=pixels, kind="image", source=str(path), metadata={"display_ready": ready})


def _series_in_folder(folder: Path, series_uid: str | None) -> DecodedImage:
    series, problems = find_series(folder)
    if series_uid is not None:
        series = [s for s in series if s.series_uid == series_uid]
    if not series:
        detail = f"; unreadable: {problems[0][1]}" if problems else ""
        wanted = f" with SeriesInstanceUID {series_uid}" if series_uid else ""
        raise ImageDecodeError(f"{folder}: no DICOM series{wanted} found{detail}")
    chosen = max(series, key=lambda s: len(s.files))
    decoded = load_series(chosen.files)
    if len(series) > 1:
        decoded.metadata["chosen_series"] = f"{chosen.series_uid} ({len(chosen.files)} of {len(series)} series' files)"
    return decoded


def load_image(path: str | Path, *, series_uid: str | None = None) -> DecodedImage:
    """Decode a picture file, DICOM file, DICOM series folder (largest series) or NIfTI file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return _series_in_folder(path, series_uid)
    if is_nifti_path(path):
        return read_nifti(path)
    if path.suffix.lower() == ".dcm" or is_dicom_file(path):
        return read_dicom_file(path)
    return read_picture(path)


def load_case_image(image: CaseImage) -> DecodedImage:
    """Decode a stored case image: an explicit list of series files when the archive gave one."""
    files = image.metadata.get("dicom_files") if image.metadata else None
    if files:
        return load_series([Path(f) for f in files])
    return load_image(image.path, series_uid=(image.metadata or {}).get("series_uid"))
