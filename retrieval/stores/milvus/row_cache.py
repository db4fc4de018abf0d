"""A bounded, thread-safe cache of Milvus rows by primary key, for the reads a search repeats.

A row's primary key is never reused (Milvus's auto ids only grow) and a stored row is never changed in
place: a case written again gets new rows, under new keys, and the old ones are deleted. So what a key
read once holds (an image's case, vector and hit fields; the image keys of a case row) stays true for as
long as that key is stored, and a cached row can only be wrong by having been deleted since. The store
never shows a hit from the cache alone: its hits are read through the case rows every time, so a deleted
case drops out at once, as without the cache. What the cache saves is the two or three round trips to
Milvus that each search spent on reading the same vectors again for exact rescoring.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RowCache(Generic[K, V]):
    """At most `size` entries, the least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The cached entries among `keys` (each marked as just used)."""
        found: dict[K, V] = {}
        with self._lock:
            for key in keys:
                if key in self._rows:
                    self._rows.move_to_end(key)
                    found[key] = self._rows[key]
        return found

    def put_many(self, rows: Mapping[K, V]) -> None:
        with self._lock:
            self._rows.update(rows)
            for key in rows:
                self._rows.move_to_end(key)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)
