"""Which stored cases one search may return: the same record for every backend and every search space."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kgreport.errors import InvalidInput

MAX_FILTERS = 32
"""Filters one search may carry: each is a clause of the store's query (SQLite and Milvus both cap a
query's size), and no archive has more metadata keys worth combining."""
MAX_FILTER_VALUE_CHARS = 1024
FILTER_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # fullmatch: metadata keys go into a JSON path, kept plain


class InvalidFilterError(InvalidInput):
    """A filter key that is not a plain name (letters, digits, `_`, `-`, `.`), more than `MAX_FILTERS`
    filters, or a value longer than `MAX_FILTER_VALUE_CHARS`."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)


def check_filters(filters: Mapping[str, str | None]) -> None:
    """InvalidFilterError unless every backend can run `filters` as given."""
    if len(filters) > MAX_FILTERS:
        raise InvalidFilterError(f"at most {MAX_FILTERS} filters per search ({len(filters)} given)")
    for key, value in filters.items():
        if not FILTER_KEY.fullmatch(key):
            raise InvalidFilterError(f"invalid filter key {key[:80]!r}")
        if value is not None and len(str(value)) > MAX_FILTER_VALUE_CHARS:
            raise InvalidFilterError(f"filter {key!r}: a value of at most {MAX_FILTER_VALUE_CHARS} characters")


@dataclass(frozen=True)
class SearchScope:
    """Metadata filters (case-insensitive equality on modality, body_region, patient_id, case_id or a
    metadata key, combined with AND; checked by `check_filters`), the cases and patients left out (the
    leakage guard), and whether only cases with a report may come back (always so in the text space:
    image-only cases have no report vector)."""

    filters: Mapping[str, str | None] = field(default_factory=dict)
    exclude_case_ids: frozenset[str] = frozenset()
    exclude_patient_ids: frozenset[str] = frozenset()
    reported_only: bool = False

    def __post_init__(self) -> None:
        # Callers pass lists and sets; the record keeps frozen copies (its hash and equality need them).
        object.__setattr__(self, "filters", dict(self.filters or {}))
        object.__setattr__(self, "exclude_case_ids", frozenset(self.exclude_case_ids or ()))
        object.__setattr__(self, "exclude_patient_ids", frozenset(self.exclude_patient_ids or ()))
        check_filters(self.filters)


EVERY_CASE = SearchScope()
