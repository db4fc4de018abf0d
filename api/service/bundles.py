"""Uploaded archives: a manifest (JSONL or CSV) and the images it names, sent in one request.

The images are matched to the manifest's rows by file name (folders in the manifest are ignored, as
browsers send bare names), saved into a bundle folder under the data dir, and the manifest is written
again as JSONL with the saved paths, so the ordinary manifest reader indexes it. The bundle stays on
disk: the index's cases point at its images (thumbnails and previews read them). Everything that can
be checked before the job starts is: an unreadable manifest, an image no row names, a row naming an
image that was not sent; such a request is refused and leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath

from starlette.datastructures import UploadFile

from kgreport.api.service.errors import ApiError
from kgreport.api.service.uploads import remove_folder, save_upload
from kgreport.indexing.archives.base import ArchiveError
from kgreport.indexing.archives.manifest import ManifestArchive, as_list

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv")
SHOWN = 5  # names listed in an error


def base_name(name: str) -> str:
    """The file name without any folders, whichever separator the client used."""
    return PureWindowsPath(PurePosixPath(name).name).name


async def _save_manifest(upload: UploadFile, folder: Path, max_bytes: int) -> ManifestArchive:
    given = upload.filename or "manifest"
    suffix = next((s for s in MANIFEST_SUFFIXES if given.lower().endswith(s)), None)
    content = await upload.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise ApiError(413, "upload_too_large", f"{given}: larger than {max_bytes} bytes")
    if suffix is None:  # no usable name: a JSON object on the first line means JSONL, else CSV
        suffix = ".jsonl" if content.lstrip().startswith(b"{") else ".csv"
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "manifest_unreadable", f"{given}: a manifest must be UTF-8 text (JSONL or CSV)") from None
    path = folder / f"uploaded{suffix}"
    path.write_bytes(content)
    try:
        archive = ManifestArchive(path)
    except (ArchiveError, csv.Error) as err:
        raise ApiError(422, "manifest_unreadable", f"{given}: {err}".replace(str(path), given)) from None
    if not archive.rows:
        raise ApiError(422, "manifest_empty", f"{given}: the manifest has no rows")
    return archive


async def save_bundle(manifest: UploadFile, images: list[UploadFile], folder_root: Path, max_bytes: int) -> Path:
    """Save the manifest and its images under a new folder in `folder_root`; the rewritten manifest's path."""
    folder = folder_root / f"bundle-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    try:
        archive = await _save_manifest(manifest, folder, max_bytes)
        saved: dict[str, Path] = {}
        for upload in images:
            name = base_name(upload.filename or "")
            if not name:
                raise ApiError(422, "invalid_request", "images: every image needs a file name the manifest can name")
            if name in saved:
                raise ApiError(422, "invalid_request", f"images: two images are named {name!r}")
            saved[name] = await save_upload(upload, folder / "images", max_bytes, keep_name=True)
        named: set[str] = set()
        missing: list[str] = []
        lines = []
        for _, row in archive.rows:
            if row is not None:
                names = [base_name(n) for n in as_list(row.get("images"))]
                named.update(names)
                missing += [n for n in names if n not in saved]
                row = {**row, "images": [str(saved[n].relative_to(folder)) for n in names if n in saved]}
            lines.append(json.dumps(row))
        if missing:
            raise ApiError(422, "images_missing", f"the manifest names images that were not sent: {_shown(missing)}")
        unused = sorted(set(saved) - named)
        if unused:
            raise ApiError(422, "images_unused", f"images that no manifest row names: {_shown(unused)}")
        rewritten = folder / "manifest.jsonl"
        rewritten.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return rewritten
    except BaseException:
        remove_folder(folder)
        raise


def _shown(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(repr(n) for n in names[:SHOWN]) + more
