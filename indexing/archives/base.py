"""What every archive reader is, and the checks every reader shares.

An archive is an iterable of cases (or of reasons a source was skipped). The shared checks keep a
reader inside its archive: `inside_root` resolves a path, symlinks included, and refuses anything that
ends up outside the archive root (`../../x.jpg`, an absolute path, a link to `/etc`), so nothing
outside an archive is ever indexed or served from it. `skip` and `warn_dropped` log what was left out
so an operator sees it even when a build only prints counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kgreport.errors import InvalidInput
from kgreport.retrieval.records import Case, SkippedItem

log = logging.getLogger("kgreport.indexing.archives")


class ArchiveError(InvalidInput):
    """The archive as a whole cannot be read (missing root, unreadable manifest, unknown format)."""

    code = "bad_archive"


class OutsideRootError(InvalidInput):
    """A file an archive names (a report, an image) resolves outside the archive root."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)

    def __init__(self, path: Path, what: str = "file") -> None:
        self.path = path
        super().__init__(outside_reason(what, path))


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


def inside_root(path: Path, root: Path) -> Path | None:
    """`path` fully resolved (every symlink followed) when that lies under the resolved `root`, else None.

    A relative `path` is taken relative to the working directory, so callers join it to the root
    first. A symlink loop or an unresolvable link counts as outside: it cannot be shown to be inside.
    """
    try:
        resolved = path.resolve()
        base = root.resolve()
    except (OSError, RuntimeError):  # RuntimeError: symlink loop before Python 3.13
        return None
    return resolved if resolved.is_relative_to(base) else None


def outside_reason(what: str, path: Path | str) -> str:
    """The one wording of "this lies outside the archive root", for skip reasons and warnings."""
    return f"{what} {str(path)!r} resolves outside the archive root (symlinks followed); not read"


def skip(source: str, reason: str) -> SkippedItem:
    """A `SkippedItem`, also logged as a warning: used for paths outside the root and ids that break the rule."""
    log.warning("skipping %s: %s", source, reason)
    return SkippedItem(source=source, reason=reason)


def warn_dropped(source: str, reason: str) -> None:
    """Log one image dropped from a case that keeps its other images (no `SkippedItem` for it)."""
    log.warning("%s: dropping image: %s", source, reason)
