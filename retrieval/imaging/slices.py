"""Decoded images → uint8 2D slices ready for an encoder.

A volume gives k slices evenly spaced over the central 80% of its Z axis: the first and last tenth
of a scan are mostly air, couch and partial-volume slices that say little about the case.
"""

from __future__ import annotations

import numpy as np

from retrieval.imaging.decoded import DecodedImage
from retrieval.imaging.windows import apply_window, normalize_percentile

DEFAULT_CT_WINDOW = "abdomen"


def _to_gray(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # RGB pictures (annotated exports): luminance
        return pixels @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return pixels


def _scale(pixels: np.ndarray, image: DecodedImage, window: str | None) -> np.ndarray:
    if image.is_hu:
        return apply_window(pixels, window or DEFAULT_CT_WINDOW)
    if image.metadata.get("display_ready"):
        return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return normalize_percentile(pixels)


def slice_indices(depth: int, k: int) -> list[int]:
    """k distinct indices spread over the central 80% of `depth` slices (fewer if depth < k)."""
    if depth <= 0:
        return []
    positions = np.linspace(0.1 * (depth - 1), 0.9 * (depth - 1), num=min(k, depth))
    return sorted(set(int(round(p)) for p in positions))


def to_slices(image: DecodedImage, *, k: int = 8, window: str | None = None) -> list[np.ndarray]:
    """uint8 (H, W) slices: one for a 2D image, up to k for a volume (scaled over the whole volume)."""
    pixels = image.pixels
    if image.kind == "image":
        return [_scale(_to_gray(pixels), image, window)]
    if pixels.ndim == 4:  # multi-frame colour DICOM
        pixels = _to_gray(pixels)
    picked = pixels[slice_indices(pixels.shape[0], k)]
    if not image.is_hu and not image.metadata.get("display_ready"):
        return list(normalize_percentile(picked))  # one scale for the volume, so slices stay comparable
    return [_scale(s, image, window) for s in picked]
