"""Concurrent queries embedded together, on one model thread per encoder.

A service answers many searches at once, each needing one text or one image embedded. Run from every
request thread, the encoders fight over the cores and the GIL: on 2 cores, 20 concurrent new text
queries cost about 47 ms of CPU each against 14 ms alone. Queued to one thread instead, the
queries that arrive while a batch runs form the next batch: 16 texts take 42 ms together against
16 × 14 ms one by one, and images stop contending. Measured with `benchmarks/service_load.py` (cache
off, side by side): new text searches 25 → 67 req/s, new image searches 29 → 51 req/s. Since the
image tower is frozen (`frozen.py`) image batches save compute too: 7 slices take 20 ms, one 6 ms.

A batch that fails is retried one item at a time, so a bad item's error reaches only its caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

from kgreport.retrieval.encoders.image_encoder import ImageEncoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.encoders.volume_embedding import embed_decoded
from kgreport.retrieval.imaging import DecodedImage

Item = TypeVar("Item")
MAX_BATCH = 32


class _Pending(Generic[Item]):
    __slots__ = ("done", "error", "item", "vector")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class Coalescer(Generic[Item]):
    """Calls `embed(items) -> (n, dim)` on its own thread, for as many waiting callers at once as it can."""

    def __init__(self, embed: Callable[[list[Item]], np.ndarray], max_batch: int = MAX_BATCH, name: str = "") -> None:
        self._embed = embed
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending[Item]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"kgreport-embed-{name}", daemon=True)
        self._thread.start()

    def __call__(self, items: list[Item]) -> np.ndarray:
        """(len(items), dim) vectors, as `embed(items)` would give; its error if it raises for these items."""
        if not items:
            return self._embed([])
        pending = [_Pending(item) for item in items]
        for p in pending:
            self._queue.put(p)
        for p in pending:
            p.done.wait()
            if p.error is not None:
                raise p.error
        return np.stack([p.vector for p in pending if p.vector is not None])

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self._embed([p.item for p in batch])
                for p, vector in zip(batch, vectors, strict=True):
                    p.vector = vector
            except Exception:  # find whose item it was: each alone
                for p in batch:
                    try:
                        p.vector = self._embed([p.item])[0]
                    except Exception as err:
                        p.error = err
            for p in batch:
                p.done.set()


class QueryCoalescers:
    """The coalescers one process shares: report text, text in the image space, and images per
    (volume slices, window) setting."""

    def __init__(self, image_encoder: ImageEncoder, text_encoder: TextEncoder) -> None:
        self.image_encoder = image_encoder
        self.report_texts: Coalescer[str] = Coalescer(text_encoder.embed, name="report-text")
        self.clip_texts: Coalescer[str] = Coalescer(image_encoder.embed_texts, name="clip-text")
        self._images: dict[Hashable, Coalescer[DecodedImage]] = {}
        self._lock = threading.Lock()

    def images(self, k: int, window: str | None) -> Coalescer[DecodedImage]:
        with self._lock:
            if (k, window) not in self._images:
                encoder = self.image_encoder

                def embed(images: list[DecodedImage]) -> np.ndarray:
                    return embed_decoded(encoder, images, k=k, window=window)

                self._images[(k, window)] = Coalescer(embed, max_batch=8, name="image")
            return self._images[(k, window)]
