"""CT window presets (centre/width in Hounsfield units) and intensity scaling to 8 bits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgreport.errors import InvalidInput


class UnknownWindowError(InvalidInput):
    """A window preset name that is not one of `WINDOW_PRESETS`."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)


@dataclass(frozen=True)
class WindowPreset:
    """A CT display window: HU values in [center − width/2, center + width/2] span black to white."""

    name: str
    center: float
    width: float

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"window {self.name!r}: width must be positive, got {self.width}")


WINDOW_PRESETS: dict[str, WindowPreset] = {
    p.name: p
    for p in (
        WindowPreset("lung", -600, 1500),
        WindowPreset("mediastinum", 50, 350),
        WindowPreset("bone", 400, 1800),
        WindowPreset("brain", 40, 80),
        WindowPreset("abdomen", 40, 400),
    )
}


def get_window(preset: WindowPreset | str) -> WindowPreset:
    """The preset itself, or the named one (case-insensitive); ValueError lists the known names."""
    if isinstance(preset, WindowPreset):
        return preset
    try:
        return WINDOW_PRESETS[preset.lower()]
    except KeyError:
        known = ", ".join(WINDOW_PRESETS)
        raise UnknownWindowError(f"unknown window preset {preset!r}; expected one of {known}") from None


def apply_window(hu: np.ndarray, preset: WindowPreset | str) -> np.ndarray:
    """Map HU to 0..255 linearly inside [centre − width/2, centre + width/2], clipping outside."""
    window = get_window(preset)
    low = window.center - window.width / 2
    scaled = (np.asarray(hu, dtype=np.float32) - low) / window.width
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def normalize_percentile(x: np.ndarray, low: float = 1, high: float = 99) -> np.ndarray:
    """Scale non-HU data (MR, photographs) to 0..255 between two percentiles; robust to outliers."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = np.percentile(x, [low, high]) if x.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((x - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
