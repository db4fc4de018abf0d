"""What every archive reader is: an iterable of cases (or of reasons a source was skipped)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from retrieval.records import Case, SkippedItem


class ArchiveError(ValueError):
    """The archive as a whole cannot be read (missing root, unreadable manifest, unknown format)."""


class Archive(Protocol):
    """A source of prior cases.

    Readers yield a `Case` for every usable case and a `SkippedItem` (with the reason) for every
    source they could not turn into one, so a build can count and log what it left out without
    stopping.
    """

    name: str

    def __iter__(self) -> Iterator[Case | SkippedItem]: ...

    def __len__(self) -> int:
        """How many items iteration will yield (cases plus skipped), for progress bars."""
        ...
