"""The query-embedding cache: content keys, least-recently-used eviction, size limit, threads."""

from __future__ import annotations

import threading
from pathlib import Path

from kgreport.retrieval.query_cache import MAX_ITEM_BYTES, QueryCache, file_digest


def test_least_recently_used_entries_go_first() -> None:
    cache = QueryCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.stats() == {"entries": 2, "hits": 3, "misses": 1}


def test_large_items_and_a_zero_size_cache_keep_nothing() -> None:
    cache = QueryCache(4)
    cache.put("volume", object(), nbytes=MAX_ITEM_BYTES + 1)
    assert cache.get("volume") is None
    off = QueryCache(0)
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0


def test_file_digest_is_by_content_not_path(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    first.write_bytes(b"same bytes")
    second.write_bytes(b"same bytes")
    other.write_bytes(b"other bytes")
    assert file_digest(first) == file_digest(second) != file_digest(other)
    assert file_digest(tmp_path) is None  # a series folder is not cached


def test_concurrent_use_keeps_the_limit() -> None:
    cache = QueryCache(50)

    def work(n: int) -> None:
        for i in range(500):
            cache.put((n, i % 80), i)
            cache.get((n, (i * 7) % 80))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50
    assert cache.hits + cache.misses == 4 * 500
