"""An index's manifest: what its vectors are (sizes, the encoders that made them) and its bookkeeping.

One record for both backends: a local index keeps it as `manifest.json` beside its database, a Milvus
index in its registry row. `IndexManifest.from_json` is the one place a manifest is checked, `load` and
`save` the one place a local one is read and written (atomically). Keys this version does not know are
kept as they were (`extra`), so an older kgreport never drops what a newer one wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from kgreport.errors import Conflict, NotFound, Unavailable
from kgreport.json_types import JsonObject
from kgreport.retrieval.stores.local.rows import write_json_atomic

FORMAT_VERSION = 1
MANIFEST_KEYS = ("image_dim", "text_dim", "image_encoder", "text_encoder")  # besides format_version
MANIFEST_FILE = "manifest.json"


class IndexNotFoundError(NotFound, FileNotFoundError):
    """No index at the given path (or its manifest is unreadable)."""

    code = "index_not_found"


class IndexExistsError(Conflict, FileExistsError):
    """An index is already where a new one was to be made."""

    code = "index_exists"


class IndexUnreadableError(Unavailable, RuntimeError):
    """An index whose files are there but cannot be read: a garbage manifest, a corrupt, emptied or
    zero-length database. The message names the file; other indexes are not affected."""

    code = "index_unreadable"


@dataclass
class IndexManifest:
    """What an index's vectors are, and the bookkeeping its backend keeps with them."""

    image_dim: int
    text_dim: int
    image_encoder: str
    text_encoder: str
    created: str | None = None  # when the index was made: a rebuilt index is told apart by it
    image_encoder_fingerprint: str | None = None  # the image encoder's weights (same size, other space)
    faiss_generation: int | None = None  # local: the generation the FAISS files on disk hold
    backend: str | None = None  # "milvus"; a local index does not say
    image_index: str | None = None  # Milvus: the kind its collections are indexed with (flat, hnsw; ivf before)
    text_index: str | None = None
    metadata_keys: list[str] | None = None  # Milvus: the metadata keys filters may name
    collections: dict[str, str] | None = None  # Milvus: this copy's images and cases collections, and aliases
    format_version: int = FORMAT_VERSION
    extra: JsonObject = field(default_factory=dict)  # keys this version does not know, kept

    @classmethod
    def new(cls, *, image_dim: int, text_dim: int, image_encoder: str, text_encoder: str,
            image_encoder_fingerprint: str | None = None) -> IndexManifest:  # fmt: skip
        """The manifest of an index made now (its backend's bookkeeping is added with `dataclasses.replace`)."""
        return cls(
            image_dim=int(image_dim),
            text_dim=int(text_dim),
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            image_encoder_fingerprint=image_encoder_fingerprint or None,
            created=datetime.now(UTC).isoformat(timespec="microseconds"),
        )

    @classmethod
    def from_json(cls, data: object, where: str) -> IndexManifest:
        """The manifest in `data`, checked: IndexUnreadableError if it is not an object, ValueError naming
        `where` if it is another format version, lacks a key or has a size that is not a positive integer."""
        if not isinstance(data, Mapping):
            raise IndexUnreadableError(f"{where}: not a readable manifest (a JSON object is expected)")
        if data.get("format_version") != FORMAT_VERSION:
            found = data.get("format_version")
            raise ValueError(f"{where}: index format {found}, this kgreport reads {FORMAT_VERSION}")
        missing = set(MANIFEST_KEYS) - data.keys()
        if missing:
            raise ValueError(f"{where}: missing {', '.join(sorted(missing))}")
        for key in ("image_dim", "text_dim"):
            if not (type(data[key]) is int and data[key] > 0):
                raise ValueError(f"{where}: {key} {data[key]!r} is not a positive integer")
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    def to_json(self) -> JsonObject:
        """The manifest as stored: the fields that are set, then the kept unknown keys."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {"format_version": self.format_version, **{k: v for k, v in data.items() if v is not None}, **self.extra}

    @classmethod
    def load(cls, path: Path) -> IndexManifest:
        """The manifest file at `path`, checked (see `from_json`); IndexUnreadableError if it is not JSON."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexUnreadableError(f"{path}: not a readable manifest ({err})") from err
        return cls.from_json(data, str(path))

    def save(self, path: Path) -> None:
        """Write it to `path` atomically (a reader sees the old manifest or the new one, never half)."""
        write_json_atomic(path, self.to_json())
