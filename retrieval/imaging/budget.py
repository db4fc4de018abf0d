"""How much of a decoded image may be held in memory, and which slices of a volume to read.

A few hundred KB of compressed upload can claim gigabytes of pixels (hardening issue #1): a PNG of
13000² zeros, a JPEG whose header says 13000², a .nii.gz of 1024 × 1024 × 512 zeros. Decoders check
the claimed size before they decode, and read a volume too large to hold whole in part: the slices the
embedding uses plus an evenly spread sample, never the whole array.
"""

from __future__ import annotations

from pathlib import Path

from kgreport.json_types import JsonObject
from kgreport.retrieval.config import ImagingConfig
from kgreport.retrieval.imaging.decoded import VolumeSample
from kgreport.retrieval.imaging.errors import ImageDecodeError
from kgreport.retrieval.imaging.slices import slice_indices

# A 2D picture or volume slice larger than this is refused before its pixels are decoded. Medical
# pictures rarely pass 40 MP (settings: KGREPORT_MAX_IMAGE_MEGAPIXELS).
DEFAULT_MAX_PIXELS = ImagingConfig.max_pixels
# A volume whose float32 pixels fit here is read whole, as it always was (512 × 512 × 256 slices).
MAX_VOLUME_BYTES = 256 << 20
# A larger one is read as the slices to embed plus this many evenly spread ones (statistics, previews,
# and a near slice for a caller embedding a different number of slices), within MAX_VOLUME_BYTES.
SAMPLE_SLICES = 32
# The slices to embed alone may take this much (8 slices of 4096², 64 of 1448²); more is refused.
MAX_EMBEDDED_BYTES = 512 << 20
# A header claiming more voxels than this (1024³; 512 × 512 × 4096) is refused unread: a gzip stream
# must be decompressed up to the last slice read, so even a sample would cost minutes.
MAX_VOLUME_VOXELS = 1 << 30


def check_plane(path: Path | str, width: int, height: int, max_pixels: int, what: str = "a picture") -> None:
    """ImageDecodeError when a width x height picture (or slice) is over the pixel budget."""
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{path}: {width} x {height} pixels is more than the {max_pixels / 1e6:g} MP {what} may have "
            "(KGREPORT_MAX_IMAGE_MEGAPIXELS)"
        )


def slices_to_read(path: Path | str, depth: int, slice_bytes: int, k: int) -> list[int] | None:
    """Ascending indices of the slices of a volume to decode, or None for all of them.

    `slice_bytes` is one slice's float32 size. A volume within MAX_VOLUME_BYTES is read whole; a larger
    one as `slice_indices(depth, k)` (exactly what `to_slices(k=k)` embeds) plus up to SAMPLE_SLICES
    evenly spread slices. Refused (ImageDecodeError) when the k slices alone pass MAX_EMBEDDED_BYTES.
    """
    if depth * slice_bytes <= MAX_VOLUME_BYTES:
        return None
    chosen = slice_indices(depth, k)
    if len(chosen) * slice_bytes > MAX_EMBEDDED_BYTES:
        raise ImageDecodeError(
            f"{path}: {len(chosen)} slices of {slice_bytes / 4e6:g} M values take more than the "
            f"{MAX_EMBEDDED_BYTES >> 20} MiB a volume's embedded slices may"
        )
    spare = min(SAMPLE_SLICES, MAX_VOLUME_BYTES // slice_bytes - len(chosen))
    picked = sorted(set(chosen).union(slice_indices(depth, spare) if spare > 0 else ()))
    return picked if len(picked) < depth else None


def volume_sample(wanted: list[int] | None, depth: int, metadata: JsonObject) -> VolumeSample | None:
    """The `DecodedImage.sample` of a volume whose slices `wanted` were read (None: all), noted in metadata."""
    if wanted is None:
        return None
    metadata["slices_read"] = f"{len(wanted)} of {depth}: the volume is too large to hold whole"
    return VolumeSample(depth, tuple(wanted))


def check_volume(path: Path | str, depth: int, rows: int, columns: int, max_pixels: int) -> None:
    """ImageDecodeError when a volume's slices are over the pixel budget or it claims too many voxels."""
    check_plane(path, columns, rows, max_pixels, what="a slice")
    if depth * rows * columns > MAX_VOLUME_VOXELS:
        raise ImageDecodeError(
            f"{path}: {columns} x {rows} x {depth} voxels is more than the {MAX_VOLUME_VOXELS / 2**30:g} G "
            "a volume may have"
        )
