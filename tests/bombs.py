"""Small files that decode to huge images: what hostile or careless uploads look like."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def bomb_png(path: Path, side: int = 13_000) -> Path:
    """A real PNG of side x side pixels that is small on disk (1 bit, all black: about 30 KB)."""
    Image.new("1", (side, side)).save(path)
    return path


def bomb_jpeg(path: Path, side: int = 13_000) -> Path:
    """A tiny JPEG whose header (SOF0) claims side x side pixels."""
    Image.new("L", (16, 16)).save(path, quality=50)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))
    return path
