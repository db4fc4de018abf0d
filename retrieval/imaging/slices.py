"""Decoded images → uint8 2D slices ready for an encoder."""

from __future__ import annotations

import numpy as np

from kgreport.retrieval.config import ImagingConfig
from kgreport.retrieval.imaging.decoded import DecodedImage
from kgreport.retrieval.imaging.windows import apply_window, normalize_percentile

DEFAULT_CT_WINDOW = "abdomen"
DEFAULT_SLICES = ImagingConfig.volume_slices  # slices embedded per volume unless told


def slice_indices(depth: int, k: int) -> list[int]:
    """k distinct indices spread evenly over the central 80% of `depth` slices.

    All slices when the volume has no more than k; the sampled range widens past the central 80%
    only when that part alone holds fewer than k slices.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if depth <= k:
        return list(range(max(depth, 0)))
    low, high = int(np.floor(0.1 * (depth - 1) + 0.5)), int(np.floor(0.9 * (depth - 1) + 0.5))
    if high - low + 1 < k:
        low = max(0, min((depth - k) // 2, depth - k))
        high = low + k - 1
    # floor(x + 0.5), not np.round: banker's rounding can map two points one apart to one index
    return [int(i) for i in np.floor(np.linspace(low, high, k) + 0.5)]


def _scale(pixels: np.ndarray, image: DecodedImage, window: str | None) -> np.ndarray:
    """uint8 pixels: windowed HU, untouched 8-bit pictures, or percentile-scaled raw values."""
    if image.is_hu:
        return apply_window(pixels, window or DEFAULT_CT_WINDOW)
    if image.metadata.get("display_ready"):
        return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return normalize_percentile(pixels)  # one scale for all given slices, so they stay comparable


def to_slices(image: DecodedImage, *, k: int = DEFAULT_SLICES, window: str | None = None) -> list[np.ndarray]:
    """uint8 slices for an encoder: one for a 2D image, k (fewer if the volume is thinner) for a volume.

    Volume slices are spread evenly over the central 80% of the Z axis: the first and last tenth of
    a scan are mostly air, couch and partial-volume slices that say little about the case. CT (HU)
    data is windowed with the named preset (default `DEFAULT_CT_WINDOW`); other data is scaled
    between its 1st and 99th percentiles. Slices are (H, W), or (H, W, 3) for colour sources.
    Of a volume read in part (`image.sample`), the slices are those read for the same k; for another
    k, the nearest read ones.
    """
    if image.kind == "image":
        return [_scale(image.pixels, image, window)]
    picked = image.pixels[image.rows_of(slice_indices(image.depth, k))]
    return list(_scale(picked, image, window))
