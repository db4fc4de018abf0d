"""NIfTI volumes (nibabel), reoriented to the closest canonical (RAS+) orientation.

Volumes come back as (Z, H, W) axial slices in radiological display: rows anterior → posterior,
columns patient right → left, Z inferior → superior.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from retrieval.imaging.decoded import DecodedImage
from retrieval.imaging.errors import ImageDecodeError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | Path, *, assume_hu: bool | None = None) -> DecodedImage:
    """Read a 2D or 3D NIfTI image (4D: its first volume). `assume_hu=None` guesses CT from the values."""
    path = Path(path)
    try:
        image: Any = nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, gzip errors, ...
        raise ImageDecodeError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err
    shape = tuple(int(s) for s in image.shape)
    notes: dict[str, object] = {}
    if len(shape) > 4 or len(shape) < 2 or min(shape) < 1:
        raise ImageDecodeError(f"{path}: unsupported NIfTI shape {shape} (expected 2D, 3D or 4D)")
    try:
        canonical: Any = nib.as_closest_canonical(image) if len(shape) >= 3 else image
        data = np.asarray(canonical.get_fdata(dtype=np.float32))
    except Exception as err:
        raise ImageDecodeError(f"{path}: cannot read NIfTI voxel data ({type(err).__name__}: {err})") from err
    if data.ndim == 4:
        if data.shape[3] > 1:
            notes["note"] = f"4D image with {data.shape[3]} volumes: using the first"
        data = data[..., 0]
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    if assume_hu is None:
        assume_hu = bool(data.size) and float(np.percentile(data, 1)) <= -900
    if data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 1):
        plane = data if data.ndim == 2 else data[:, :, 0]
        pixels = np.ascontiguousarray(plane.T[::-1, :])
        return DecodedImage(
            pixels=pixels,
            kind="image",
            source=str(path),
            is_hu=assume_hu,
            spacing=(zooms[1], zooms[0]) if len(zooms) >= 2 else None,
            metadata=notes,
        )
    volume = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, :])
    orientation = "".join(nib.aff2axcodes(canonical.affine))
    return DecodedImage(
        pixels=volume,
        kind="volume",
        source=str(path),
        is_hu=assume_hu,
        spacing=(zooms[2], zooms[1], zooms[0]),
        metadata={**notes, "orientation": orientation, "original_shape": shape},
    )
