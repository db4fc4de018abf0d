"""The one rule for case, patient and index ids, used by the API, the CLI and every archive reader.

An id is 1 to 128 characters from `[A-Za-z0-9._:-]` and is neither `.` nor `..`. That keeps an id
usable as one URL path segment, a file-name part and a graph key as it is: no `/`, no NUL, no
newline, nothing to escape. Matching is `fullmatch`, so a trailing newline never slips through the
way it does past a `$`-anchored pattern.

DICOM patient ids are the exception the rule plans for: headers hold free text (`Doe^John 123`), so
`header_patient_id` turns one that breaks the rule into a stable digest; the same patient keeps the
same id and the leakage guard still works.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from kgreport.errors import InvalidInput

ID_MAX_LENGTH = 128
ID_PATTERN = re.compile(rf"[A-Za-z0-9._:-]{{1,{ID_MAX_LENGTH}}}")
ID_RULE = f"1 to {ID_MAX_LENGTH} of letters, digits, '.', '_', ':', '-', and not '.' or '..'"


class InvalidIdError(InvalidInput):
    """An id that breaks the rule; the message names which id ("case id", "index name", ...) and why."""

    code = "invalid_id"

    def __init__(self, kind: str, value: object, where: str = "") -> None:
        self.kind = kind
        self.value = value
        self.where = where
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        place = f" ({where})" if where else ""
        super().__init__(f"invalid {kind} {shown}{place}: use {ID_RULE}")


def is_valid_id(value: object) -> bool:
    """True when `value` is a string that follows the id rule."""
    return isinstance(value, str) and value not in (".", "..") and ID_PATTERN.fullmatch(value) is not None


def check_id(value: object, kind: str = "case id", where: str = "") -> str:
    """`value` itself when it follows the rule, else `InvalidIdError` naming `kind` and `where`."""
    if not is_valid_id(value):
        raise InvalidIdError(kind, value, where)
    assert isinstance(value, str)
    return value


def header_patient_id(value: str | None) -> str | None:
    """A patient id read from an image header, made to follow the rule without losing identity.

    Kept as is when it already follows the rule; otherwise `pid-` plus a SHA-256 digest of the
    stripped text, so two series of one patient still share one id.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if is_valid_id(text):
        return text
    return "pid-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def hashed_patient_id(value: str | None, salt: bytes) -> str | None:
    """A patient id kept only as a salted hash (`pid-` + 32 hex digits of HMAC-SHA-256): the same patient
    keeps the same id within one salt, so the leakage guard works, and the id itself is never stored."""
    if value is None or not value.strip():
        return None
    return "pid-" + hmac.new(salt, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()[:32]
