"""Uploaded images: size-limited, type-checked by their bytes, kept as a file the decoders can open.

Browsers and clients label files unreliably, so the type comes from the content: PNG and JPEG
signatures, "DICM" at byte 128 (or a DICOM file without preamble, left to pydicom), NIfTI-1/2 headers,
gzip for `.nii.gz`. Anything else is refused with 415 before a decoder sees it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import IO

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kgreport.api.service.errors import ApiError

CHUNK = 1 << 20
KNOWN_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def sniff_suffix(head: bytes, filename: str) -> str | None:
    """The file suffix the decoders expect for these leading bytes, or None if no accepted type."""
    name = filename.lower()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return ".nii"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") in (348, 540) and name.endswith(".nii"):
        return ".nii"
    if head.startswith(b"\x1f\x8b") and name.endswith((".nii.gz", ".nii")):
        return ".nii.gz"  # the NIfTI reader checks the header inside and says what is wrong
    if name.endswith(".dcm"):
        return ".dcm"  # DICOM without preamble: pydicom decides, and says why if it cannot
    return None


def safe_name(filename: str, fallback: str = "image") -> str:
    """A file name that is safe to create on the server (no folders, no odd characters)."""
    stem = _SAFE_NAME.sub("_", Path(filename or "").name).strip("._")
    return stem[:100] or fallback


async def save_upload(upload: UploadFile, folder: Path, max_bytes: int, *, keep_name: bool = False) -> Path:
    """`write_upload` for a received upload, in the thread pool (file writes stay off the event loop)."""
    return await run_in_threadpool(write_upload, upload.file, upload.filename, folder, max_bytes, keep_name=keep_name)


def write_upload(
    source: IO[bytes], filename: str | None, folder: Path, max_bytes: int, *, keep_name: bool = False
) -> Path:
    """Write `source` into `folder` with the suffix its content calls for; 413 over `max_bytes`, 415 for a
    type that is not PNG, JPEG, DICOM or NIfTI. The file gets a unique name, or with `keep_name` the
    client's (made safe; 422 when another upload already took it)."""
    folder.mkdir(parents=True, exist_ok=True)
    source.seek(0)
    head = source.read(CHUNK)
    suffix = sniff_suffix(head, filename or "")
    if suffix is None:
        raise ApiError(415, "unsupported_media_type", f"{filename or 'upload'}: not a PNG, JPEG, DICOM or NIfTI file")
    stem = safe_name(filename or "image")
    known = next((k for k in KNOWN_SUFFIXES if stem.lower().endswith(k)), "")
    stem = stem[: len(stem) - len(known)] or "image"  # the sniffed suffix replaces the client's
    out: IO[bytes]
    if keep_name:
        try:
            out = (folder / f"{stem}{suffix}").open("xb")
        except FileExistsError:
            raise ApiError(422, "invalid_request", f"{filename}: another upload has the same name") from None
    else:
        out = tempfile.NamedTemporaryFile(dir=folder, prefix=f"{stem}-", suffix=suffix, delete=False)  # noqa: SIM115
    with out:
        size = 0
        chunk = head
        while chunk:
            size += len(chunk)
            if size > max_bytes:
                out.close()
                Path(out.name).unlink(missing_ok=True)
                raise ApiError(413, "upload_too_large", f"{filename or 'upload'}: larger than {max_bytes} bytes")
            out.write(chunk)
            chunk = source.read(CHUNK)
    return Path(out.name)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
