"""NIfTI images (nibabel), reoriented to the closest canonical (RAS+) orientation.

Volumes come back as (Z, H, W) axial slices in the orientation DICOM axial CT is displayed in, so
NIfTI and DICOM cases of one archive look alike to the encoder: Z inferior → superior, rows
anterior → posterior, columns patient right → left (radiological convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from retrieval.imaging.decoded import DecodedImage, finite_float32
from retrieval.imaging.errors import ImageDecodeError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The file name without `.nii` / `.nii.gz`."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _usable_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` without trailing singleton axes past the third ((X, Y, Z, 1, 1) is a plain volume)."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def open_nifti(path: str | Path) -> Any:
    """The nibabel image of `path` after a header-only check of its shape and (for `.nii`) its size.

    Raises ImageDecodeError naming the file and shape for anything `read_nifti` would refuse, so an
    archive can skip a bad volume without reading its voxels.
    """
    path = Path(path)
    try:
        image: Any = nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, gzip errors, ...
        raise ImageDecodeError(f"{path}: unreadable NIfTI file ({type(err).__name__}: {err})") from err
    shape = tuple(int(s) for s in image.shape)
    usable = _usable_shape(shape)
    if not 2 <= len(usable) <= 4 or min(usable) < 1:
        raise ImageDecodeError(f"{path}: unsupported NIfTI shape {shape} (expected 2D, 3D or 4D)")
    offset = getattr(image.dataobj, "offset", None)
    if path.name.lower().endswith(".nii") and offset is not None:  # gzip hides the size; plain files do not
        expected = int(offset) + int(np.prod(shape)) * image.get_data_dtype().itemsize
        actual = path.stat().st_size
        if actual < expected:
            raise ImageDecodeError(f"{path}: truncated NIfTI file ({actual} bytes, shape {shape} needs {expected})")
    return image


def read_nifti(path: str | Path, *, assume_hu: bool = False) -> DecodedImage:
    """Read a 2D or 3D NIfTI image (4D: its first volume, noted in metadata).

    NIfTI carries no modality, so values are Hounsfield units only when the caller says so
    (`assume_hu=True`, e.g. an archive of CT volumes), and not even then when the header's intent
    code says the voxels are something else (labels, statistics).
    """
    path = Path(path)
    image = open_nifti(path)
    shape = tuple(int(s) for s in image.shape)
    usable = _usable_shape(shape)
    notes: dict[str, Any] = {"original_shape": shape}
    try:
        if len(usable) != len(shape):
            image = image.slicer[(slice(None),) * len(usable) + (0,) * (len(shape) - len(usable))]
        if len(usable) == 4:
            if usable[3] > 1:
                notes["note"] = f"4D image with {usable[3]} volumes: using the first"
            image = image.slicer[:, :, :, 0]
        original = "".join(str(c) for c in nib.aff2axcodes(image.affine))
        canonical: Any = nib.as_closest_canonical(image)
        data = np.asarray(canonical.get_fdata(dtype=np.float32))
    except ImageDecodeError:
        raise
    except Exception as err:  # truncated gzip streams, bad scaling, ...
        raise ImageDecodeError(f"{path}: cannot read NIfTI voxel data ({type(err).__name__}: {err})") from err
    data, replaced = finite_float32(data)
    if replaced:
        notes["non_finite_replaced"] = replaced
    intent = canonical.header.get_intent()[0] if hasattr(canonical.header, "get_intent") else "none"
    if assume_hu and intent != "none":
        notes["not_hu"] = f"intent code {intent!r}"
    is_hu = assume_hu and intent == "none"
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    notes.update(orientation="RAS", original_orientation=original)
    if data.ndim == 2 or data.shape[2] == 1:
        plane = data if data.ndim == 2 else data[:, :, 0]
        return DecodedImage(
            pixels=np.ascontiguousarray(plane.T[::-1, ::-1]),
            kind="image",
            source=str(path),
            is_hu=is_hu,
            spacing=(zooms[1], zooms[0]),
            metadata=notes,
        )
    # (X, Y, Z) in RAS → (Z, rows, columns): rows from anterior (high Y), columns from patient right (high X)
    volume = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    return DecodedImage(
        pixels=volume,
        kind="volume",
        source=str(path),
        is_hu=is_hu,
        spacing=(zooms[2], zooms[1], zooms[0]),
        metadata={**notes, "plane": "axial", "n_slices": int(volume.shape[0])},
    )
