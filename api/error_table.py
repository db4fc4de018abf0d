"""The one table of known failures, shared by the REST service and the CLI.

Every known failure is a `kgreport.errors.KgreportError` of one kind; this table maps kinds (not the
classes of every layer: it imports only the error module) to the HTTP status the service answers, with
the error's own `code`. The CLI turns every one into one clear line and exit code 2. There is no builtin
row: a plain `ValueError` or `FileNotFoundError` is a defect (a JSON 500 from the service, a traceback
from the CLI), so every failure a request can cause is raised as one of the kinds, and an unexpected one
is never reported as the client's fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from kgreport.errors import Conflict, InvalidInput, KgreportError, NotFound, Unavailable, UpstreamFailed

EXIT_KNOWN_FAILURE = 2  # the CLI's exit code for every row: bad input, or a service it needs is down


@dataclass(frozen=True)
class KnownError:
    """A kind of failure and how both front ends report it (the error names its own `code`)."""

    kind: type[KgreportError]
    status: int


# First match wins, so a class of two kinds gets the first: a PACS error is also an archive error (502,
# not 422), a writer that is missing is also a missing file (503, not 404), an existing case is also a
# bad operation (409, not 422).
KNOWN_ERRORS: tuple[KnownError, ...] = (
    KnownError(Unavailable, 503),
    KnownError(UpstreamFailed, 502),
    KnownError(Conflict, 409),
    KnownError(NotFound, 404),
    KnownError(InvalidInput, 422),
)


def known_errors() -> tuple[KnownError, ...]:
    """The table, most specific kind first."""
    return KNOWN_ERRORS


def known_error_types() -> tuple[type[Exception], ...]:
    """The exception classes of the table, for an `except` clause."""
    return tuple(row.kind for row in KNOWN_ERRORS)


def describe(err: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of a known failure; None for a defect."""
    for row in KNOWN_ERRORS:
        if isinstance(err, row.kind):
            return row.status, err.code
    return None
