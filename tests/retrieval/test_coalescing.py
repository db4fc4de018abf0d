"""Coalescing: concurrent callers get their own vectors, computed in shared batches on one thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kgreport.retrieval.encoders.coalescing import Coalescer


def _lengths(batches: list[int]):  # type: ignore[no-untyped-def]
    """An embedding of words by length and first letter; records each batch's size and thread."""

    def embed(words: list[str]) -> np.ndarray:
        batches.append(len(words))
        time.sleep(0.05)  # long enough for the other callers to queue up behind the first batch
        if "bad" in words:
            raise ValueError("bad word")
        return np.array([[len(w), ord(w[0])] for w in words], dtype=np.float32)

    return embed


def test_concurrent_callers_share_batches_and_get_their_own_vectors() -> None:
    batches: list[int] = []
    coalescer = Coalescer(_lengths(batches), max_batch=32)
    words = [f"w{'x' * i}" for i in range(16)]
    results: dict[str, np.ndarray] = {}
    start = threading.Barrier(len(words))

    def ask(word: str) -> None:
        start.wait()
        results[word] = coalescer([word])

    threads = [threading.Thread(target=ask, args=(w,)) for w in words]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for word in words:
        assert results[word].tolist() == [[len(word), ord("w")]]
    assert sum(batches) == len(words) and len(batches) < len(words) and max(batches) > 1


def test_a_failing_item_fails_only_its_caller() -> None:
    batches: list[int] = []
    coalescer = Coalescer(_lengths(batches))
    outcome: dict[str, object] = {}
    start = threading.Barrier(3)

    def ask(word: str) -> None:
        start.wait()
        try:
            outcome[word] = coalescer([word]).tolist()
        except ValueError as err:
            outcome[word] = err

    threads = [threading.Thread(target=ask, args=(w,)) for w in ("good", "bad", "fine")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcome["good"] == [[4, ord("g")]] and outcome["fine"] == [[4, ord("f")]]
    assert isinstance(outcome["bad"], ValueError)
    with pytest.raises(ValueError, match="bad word"):
        coalescer(["bad"])
    assert coalescer(["ab", "c"]).tolist() == [[2, ord("a")], [1, ord("c")]]
