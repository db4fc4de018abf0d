"""What every decoder returns: pixels plus what is known about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kgreport.json_types import JsonObject


@dataclass(frozen=True)
class VolumeSample:
    """The slices of a volume that were read: `index[i]` is the whole volume's index of pixels row i."""

    depth: int
    index: tuple[int, ...]


@dataclass(frozen=True)
class DecodedImage:
    """Pixels of a 2D image or a 3D volume.

    `pixels` is float32: (H, W) grayscale, (H, W, 3) RGB for ordinary picture files, or (Z, H, W)
    for volumes ordered along the slice normal (inferior → superior for axial CT/NIfTI); colour
    multi-frame DICOM (ultrasound cine) is (Z, H, W, 3).
    `is_hu` says the values are Hounsfield units (CT after RescaleSlope/Intercept).
    `spacing` is in mm: (row, col) or (z, row, col), when known.
    `modality` is the DICOM Modality (0008,0060), e.g. "CT", "MR"; None for pictures and NIfTI.
    `metadata` holds what else the source said (series uid, body part, orientation, notes).
    `sample` is set for a volume too large to hold whole (see `budget.slices_to_read`): `pixels` then
    holds only those of its slices, and `depth` is the whole volume's.
    """

    pixels: np.ndarray
    kind: Literal["image", "volume"]
    source: str
    is_hu: bool = False
    spacing: tuple[float, ...] | None = None
    modality: str | None = None
    metadata: JsonObject = field(default_factory=dict)
    sample: VolumeSample | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    @property
    def depth(self) -> int:
        """Slices in the whole volume (1 for a 2D image), whether or not all were read."""
        if self.kind == "image":
            return 1
        return self.sample.depth if self.sample is not None else int(self.pixels.shape[0])

    def rows_of(self, indices: list[int]) -> list[int]:
        """The rows of `pixels` holding these slices of the whole volume: for a sample, the nearest read."""
        if self.sample is None:
            return list(indices)
        held = np.asarray(self.sample.index)
        return [int(np.argmin(np.abs(held - i))) for i in indices]  # ties: the lower slice


def finite_float32(array: np.ndarray) -> tuple[np.ndarray, int]:
    """`array` as float32 with NaN/inf replaced by the finite extremes, and how many were replaced.

    Float NIfTI and DICOM Float Pixel Data may hold NaN outside the field of view; left in, one NaN
    turns every percentile (and so a whole slice) into garbage.
    """
    array = np.asarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count == 0:
        return array, 0
    finite = array[~bad]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return np.nan_to_num(array, nan=low, posinf=high, neginf=low), count
