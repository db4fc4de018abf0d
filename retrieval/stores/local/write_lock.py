"""The writer lock of one index folder: at most one writer at a time, across threads and processes.

Every write to an index (a build, a case added or deleted, a rebuild, a repair) holds an exclusive `flock`
on `.write.lock` in the index's folder, so a second writer, from the service or the CLI, gets
`IndexBusyError` at once instead of interleaving with the first. Readers never take it: SQLite's own
snapshots and the store's change log keep them consistent. It lives beside `CaseStore` because it guards
the store's files, whichever layer (API, CLI, repair) does the writing.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kgreport.errors import Conflict


class IndexBusyError(Conflict, RuntimeError):
    """Another writer holds the index."""

    code = "index_busy"


_held: set[str] = set()  # index folders this process is writing; flock alone does not exclude our own threads
_held_guard = threading.Lock()


@contextmanager
def index_write_lock(root: Path, name: str) -> Iterator[None]:
    """Exclusive write access to the index in `root`, or `IndexBusyError` at once."""
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    with _held_guard:
        if key in _held:
            raise IndexBusyError(f"index {name!r} is being written by another request; try again when it is done")
        _held.add(key)
    fd = os.open(root / ".write.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = f"index {name!r} is being written by another process; try again when it is done"
            raise IndexBusyError(busy) from None
        yield
    finally:
        os.close(fd)  # releases the flock
        with _held_guard:
            _held.discard(key)


def index_busy(root: Path, name: str) -> str | None:
    """Why a writer could not take the index in `root` right now, or None: the lock is tried and let go.
    For refusing a write at submission; the write itself still takes the lock."""
    if not root.is_dir():
        return None
    try:
        with index_write_lock(root, name):
            return None
    except IndexBusyError as err:
        return str(err)
