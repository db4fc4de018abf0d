"""NIfTI images (nibabel), reoriented to the closest canonical (RAS+) orientation.

Volumes come back as (Z, H, W) axial slices in the orientation DICOM axial CT is displayed in, so
NIfTI and DICOM cases of one archive look alike to the encoder: Z inferior → superior, rows
anterior → posterior, columns patient right → left (radiological convention).

Voxels are read plane by plane from one open file, never as one whole array: a 520 KB .nii.gz can
hold 1024 × 1024 × 512 zeros (2 GiB as float32). A volume over the memory budget is read in part
(`budget.slices_to_read`); reading one slice of a gzipped file still decompresses the stream up to
it, but in a small buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.openers import ImageOpener
from nibabel.orientations import aff2axcodes, io_orientation

from kgreport.json_types import JsonObject
from kgreport.retrieval.imaging.budget import DEFAULT_MAX_PIXELS, check_volume, slices_to_read, volume_sample
from kgreport.retrieval.imaging.decoded import DecodedImage, finite_float32
from kgreport.retrieval.imaging.errors import ImageDecodeError
from kgreport.retrieval.imaging.slices import DEFAULT_SLICES

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_BLOCK_BYTES = 32 << 20  # float32 bytes of file planes read at once when axial slices cut across them


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


@dataclass(frozen=True)
class _Axes:
    """Where each RAS+ axis lies in the file: `source[c]` is the file axis of canonical axis c, and
    `flip[c]` says it runs backwards (nibabel's `io_orientation`, as `as_closest_canonical` applies it)."""

    source: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @classmethod
    def of(cls, affine: np.ndarray) -> _Axes:
        ornt = io_orientation(affine)
        if np.isnan(ornt).any():
            raise ImageDecodeError("the affine drops an axis: no closest canonical orientation")
        source, flip = [0, 0, 0], [False, False, False]
        for axis, (canonical, direction) in enumerate(ornt[:3]):
            source[int(canonical)], flip[int(canonical)] = axis, bool(direction == -1)
        return cls((source[0], source[1], source[2]), (flip[0], flip[1], flip[2]))

    @property
    def identity(self) -> bool:
        return self.source == (0, 1, 2) and not any(self.flip)

    def file_view(self, display: np.ndarray) -> np.ndarray:
        """A view of one (rows, columns) display slice indexed like the file plane it comes from.

        Display rows run from anterior, columns from patient right: canonical (X, Y) is the slice
        transposed and reversed on both axes. Undoing the flips and, when the file's in-plane axes
        come as (Y, X), the transpose gives the file's order, so a file plane can be written into it.
        """
        canonical = display[::-1, ::-1].T
        canonical = canonical[:: -1 if self.flip[0] else 1, :: -1 if self.flip[1] else 1]
        return canonical if self.source[0] < self.source[1] else canonical.T


def _planes(image: Any, spatial: tuple[int, int, int], axes: _Axes, wanted: list[int]) -> np.ndarray:
    """(len(wanted), rows, columns) float32 display slices: canonical axial slices `wanted` (ascending).

    The first volume's voxels (X, Y, Z) are the file's first X·Y·Z values, Fortran order, so a file
    plane (fixed z) is one contiguous run. Each run is read through its own ArrayProxy on one open file
    (forward seeks only, so a gzip stream is decompressed once) and scaled as nibabel scales a whole array.
    """
    proxy = image.dataobj
    dtype = np.dtype(proxy.dtype)
    plane_values = spatial[0] * spatial[1]
    z_axis, depth = axes.source[2], spatial[axes.source[2]]
    in_file = [depth - 1 - k if axes.flip[2] else k for k in wanted]
    out = np.empty((len(wanted), spatial[axes.source[1]], spatial[axes.source[0]]), dtype=np.float32)
    views = [axes.file_view(plane) for plane in out]

    # Scaled as nibabel did when the whole array was read: in float32 (get_fdata) when nothing moves,
    # else in float64 (as_closest_canonical reads the proxy unscaled-dtype first), then rounded.
    scaled_as = np.float32 if axes.identity else None

    def block(handle: Any, start: int, stop: int) -> np.ndarray:
        offset = int(proxy.offset) + start * plane_values * dtype.itemsize
        spec = ((spatial[0], spatial[1], stop - start), dtype, offset, proxy.slope, proxy.inter)
        return np.asarray(np.asanyarray(ArrayProxy(handle, spec, mmap=False), dtype=scaled_as), dtype=np.float32)

    with ImageOpener(proxy.file_like, "rb") as handle:
        if z_axis == 2:  # axial slices are file planes: read just those
            for row in sorted(range(len(wanted)), key=lambda r: in_file[r]):
                views[row][...] = block(handle, in_file[row], in_file[row] + 1)[:, :, 0]
        else:  # each axial slice is a line of every file plane: stream them all in blocks
            step = max(1, _BLOCK_BYTES // (plane_values * 4))
            for start in range(0, spatial[2], step):
                stop = min(spatial[2], start + step)
                values = block(handle, start, stop)
                for row, index in enumerate(in_file):
                    views[row][:, start:stop] = np.take(values, index, axis=z_axis)
    return out


def _zooms(image: Any, axes: _Axes) -> tuple[float, float, float]:
    """Voxel sizes along canonical X, Y, Z, as the header of `as_closest_canonical`'s image gives them:
    the header's own when nothing moves, else the column norms of the reoriented affine (as float32)."""
    if axes.identity:
        zooms = [float(z) for z in image.header.get_zooms()[:3]]
        zooms += [1.0] * (3 - len(zooms))
        return zooms[0], zooms[1], zooms[2]
    norms = np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(axis=0))
    x, y, z = (float(np.float32(norms[axes.source[c]])) for c in range(3))
    return x, y, z


def read_nifti(
    path: str | Path,
    *,
    assume_hu: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    volume_slices: int = DEFAULT_SLICES,
) -> DecodedImage:
    """Read a 2D or 3D NIfTI image (4D: its first volume, noted in metadata).

    NIfTI carries no modality, so values are Hounsfield units only when the caller says so
    (`assume_hu=True`, e.g. an archive of CT volumes), and not even then when the header's intent
    code says the voxels are something else (labels, statistics). Refused (ImageDecodeError) when an
    axial slice has more than `max_pixels` pixels or the volume more than `budget.MAX_VOLUME_VOXELS`
    voxels; a volume too large to hold whole keeps only the slices `to_slices(k=volume_slices)` embeds
    and a sample (`DecodedImage.sample`).
    """
    path = Path(path)
    image = open_nifti(path)
    shape = tuple(int(s) for s in image.shape)
    usable = _usable_shape(shape)
    notes: JsonObject = {"original_shape": shape}
    if len(usable) == 4 and usable[3] > 1:
        notes["note"] = f"4D image with {usable[3]} volumes: using the first"
    spatial = (usable[0], usable[1], usable[2] if len(usable) > 2 else 1)
    try:
        axes = _Axes.of(image.affine)
        original = "".join(str(c) for c in aff2axcodes(image.affine))
    except Exception as err:
        raise ImageDecodeError(f"{path}: cannot read NIfTI voxel data ({type(err).__name__}: {err})") from err
    depth, rows, columns = (spatial[axes.source[c]] for c in (2, 1, 0))
    check_volume(path, depth, rows, columns, max_pixels)
    wanted = slices_to_read(path, depth, rows * columns * 4, volume_slices)
    try:
        data = _planes(image, spatial, axes, wanted if wanted is not None else list(range(depth)))
    except Exception as err:  # truncated gzip streams, bad scaling, ...
        raise ImageDecodeError(f"{path}: cannot read NIfTI voxel data ({type(err).__name__}: {err})") from err
    data, replaced = finite_float32(data)
    if replaced:
        notes["non_finite_replaced"] = replaced
    intent = image.header.get_intent()[0] if hasattr(image.header, "get_intent") else "none"
    if assume_hu and intent != "none":
        notes["not_hu"] = f"intent code {intent!r}"
    is_hu = assume_hu and intent == "none"
    zoom_x, zoom_y, zoom_z = _zooms(image, axes)
    notes.update(orientation="RAS", original_orientation=original)
    if depth == 1:
        return DecodedImage(
            pixels=data[0], kind="image", source=str(path), is_hu=is_hu, spacing=(zoom_y, zoom_x), metadata=notes
        )
    sample = volume_sample(wanted, depth, notes)
    return DecodedImage(
        pixels=data,
        kind="volume",
        source=str(path),
        is_hu=is_hu,
        spacing=(zoom_z, zoom_y, zoom_x),
        metadata={**notes, "plane": "axial", "n_slices": depth},
        sample=sample,
    )
