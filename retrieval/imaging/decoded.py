"""What every decoder returns: pixels plus what is known about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class DecodedImage:
    """Pixels of a 2D image or a 3D volume.

    `pixels` is float32: (H, W) grayscale, (H, W, 3) RGB for ordinary picture files, or (Z, H, W)
    for volumes ordered along the slice normal (inferior → superior for axial CT/NIfTI).
    `is_hu` says the values are Hounsfield units (CT after RescaleSlope/Intercept).
    `spacing` is in mm: (row, col) or (z, row, col), when known.
    """

    pixels: np.ndarray
    kind: Literal["image", "volume"]
    source: str
    is_hu: bool = False
    spacing: tuple[float, ...] | None = None
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)
