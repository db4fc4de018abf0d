"""Query embeddings kept in memory, so a repeated query skips the encoders.

A radiologist's page searches an image, changes a filter or k, then asks for the report of the same
image: each of those requests would otherwise decode and embed the same upload again (the encoders are
most of a search's CPU time). Entries are keyed by content, never by path: an image by the SHA-256 of
its file's bytes (an upload gets a new temporary path every time), a text by its exact string, each
with the settings that change the embedding. Least recently used entries go first; large decoded
volumes are not kept.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

MAX_ITEM_BYTES = 8_000_000  # a 2D image or a few slices; a decoded CT volume is not worth the memory


def file_digest(path: Path) -> str | None:
    """SHA-256 of a regular file's bytes; None for a folder (a DICOM series: not cached)."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class QueryCache:
    """A thread-safe LRU map from a content key to an embedding result (treated as read-only)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any, nbytes: int = 0) -> None:
        if self.max_entries <= 0 or nbytes > MAX_ITEM_BYTES:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "hits": self.hits, "misses": self.misses}
