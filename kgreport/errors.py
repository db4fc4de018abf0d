"""Every known failure's base, and the few kinds a front end tells apart.

Each layer raises its own subclasses (`IndexNotFoundError`, `NotesError`, ...), each of one kind below and
with a stable `code` for clients; many also keep the builtin base they had (a `ValueError`, a
`FileNotFoundError`), so code that caught those still does. The front ends map kinds, not classes, to
HTTP statuses and exit codes, in one table (`api.error_table`) that imports only this module.
"""

from __future__ import annotations

from typing import ClassVar


class KgreportError(Exception):
    """A known failure: the message says what went wrong and where (the file, the index, the field)."""

    code: ClassVar[str] = "error"  # stable, for clients: the REST answer's `error.code`


class Unavailable(KgreportError):
    """A part the request needs is down or missing: a graph or Milvus server, a model, a trained writer."""


class UpstreamFailed(KgreportError):
    """A system we called answered wrongly: a PACS, the LLM's output."""


class Conflict(KgreportError):
    """The request collides with the index's state: the case exists, another writer holds the index."""


class NotFound(KgreportError):
    """What the request names does not exist: an index, a case, a concept."""


class SettingError(Unavailable, ValueError):
    """A setting (`KGREPORT_*`, a CLI option naming one) that cannot work: a malformed server URL, a device
    this machine lacks. The service cannot serve what needs it until the setting is fixed."""

    code = "bad_setting"


class InvalidInput(KgreportError, ValueError):
    """The request itself is wrong: an id, an image, notes, a filter, an archive."""
