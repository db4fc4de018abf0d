"""Small files that decode to huge images: what hostile or careless uploads look like.

Each is written as a stream, so making one costs a few MB of memory however large it claims to be.
The defaults are the files of hardening issue #1: a 493 KB RGB PNG, a tiny JPEG and a 522 KB .nii.gz.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

_CHUNK = 16 << 20  # bytes of zeros written at a time


def bomb_png(path: Path, side: int = 13_000) -> Path:
    """A real PNG of side x side pixels that is small on disk (1 bit, all black: about 30 KB)."""
    Image.new("1", (side, side)).save(path)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png_rgb(path: Path, side: int = 13_000) -> Path:
    """A black side x side 8-bit RGB PNG (about 490 KB at 13000²), written row by row."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter type 0, then the row's zero bytes
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        for _ in range(side):
            if block := compressor.compress(row):
                handle.write(_png_chunk(b"IDAT", block))
        handle.write(_png_chunk(b"IDAT", compressor.flush()))
        handle.write(_png_chunk(b"IEND", b""))
    return path


def bomb_jpeg(path: Path, side: int = 13_000) -> Path:
    """A tiny JPEG whose header (SOF0) claims side x side pixels."""
    Image.new("L", (16, 16)).save(path, quality=50)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))
    return path


def bomb_nifti(
    path: Path, shape: tuple[int, ...] = (1024, 1024, 512), dtype: type = np.uint8, *, voxels: bool = True
) -> Path:
    """A gzipped NIfTI of zeros of `shape` (about 520 KB at 1024 x 1024 x 512 uint8), streamed to disk.

    `voxels=False` writes the header alone: a file that claims `shape` for checks that must refuse it unread.
    """
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms((0.5,) * len(shape))
    header.set_qform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    header.set_sform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    header["vox_offset"] = 352
    remaining = int(np.prod(shape)) * np.dtype(dtype).itemsize if voxels else 0
    zeros = bytes(min(_CHUNK, remaining))
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(header.binaryblock + b"\x00" * 4)  # 348-byte header, empty extension flag
        while remaining > 0:
            handle.write(zeros[: min(_CHUNK, remaining)])
            remaining -= _CHUNK
    return path
