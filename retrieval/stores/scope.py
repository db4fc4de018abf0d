"""Which stored cases one search may return: the same record for every backend and every search space."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kgreport.errors import InvalidInput


class InvalidFilterError(InvalidInput):
    """A filter key that is not a plain name (letters, digits, `_`, `-`, `.`)."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)


@dataclass(frozen=True)
class SearchScope:
    """Metadata filters (case-insensitive equality on modality, body_region, patient_id, case_id or a
    metadata key, combined with AND), the cases and patients left out (the leakage guard), and whether
    only cases with a report may come back (always so in the text space: image-only cases have no report
    vector)."""

    filters: Mapping[str, str | None] = field(default_factory=dict)
    exclude_case_ids: frozenset[str] = frozenset()
    exclude_patient_ids: frozenset[str] = frozenset()
    reported_only: bool = False

    def __post_init__(self) -> None:
        # Callers pass lists and sets; the record keeps frozen copies (its hash and equality need them).
        object.__setattr__(self, "filters", dict(self.filters or {}))
        object.__setattr__(self, "exclude_case_ids", frozenset(self.exclude_case_ids or ()))
        object.__setattr__(self, "exclude_patient_ids", frozenset(self.exclude_patient_ids or ()))


EVERY_CASE = SearchScope()
