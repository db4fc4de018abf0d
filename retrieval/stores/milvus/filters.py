"""Metadata filters and leakage exclusions as Milvus boolean expressions, built from a whitelist.

Field names never come from the request: a filter key picks one of the fields below, or, for any other
key, a path into the lower-cased metadata JSON, and only when the index has stored that key (else
`UnknownFilterFieldError`, a 422). Values are written as JSON string literals (`json.dumps`, ASCII
only), which Milvus's expression grammar reads with the same escapes, so no value can close its quotes
and add a clause.

Filters are case-insensitive equality, as on the embedded store: rows keep lower-cased copies of the
filterable values (`*_lc`). An image row matches on its own value (it stores its case's where it has
none); a case row (text space) matches if its own value or any of its images' does, so it keeps arrays.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from kgreport.errors import InvalidInput
from kgreport.retrieval.stores.scope import SearchScope

FIXED_FIELDS = ("modality", "body_region", "patient_id", "case_id")


class UnknownFilterFieldError(InvalidInput):
    """A filter on a field that no stored case has."""

    code = "unknown_filter_field"


def literal(value: str) -> str:
    """A Milvus string literal for `value` (double-quoted, escaped)."""
    return json.dumps(str(value), ensure_ascii=True)


def _literal_list(values: Collection[str]) -> str:
    return "[" + ", ".join(literal(v) for v in sorted(values)) + "]"


def filter_expression(space: str, scope: SearchScope, metadata_keys: Collection[str]) -> str:
    """The `filter` of one Milvus search in `space` ("image" or "text"); "" when nothing constrains it.
    The scope has checked its filters' keys (plain names), count and value lengths."""
    clauses = []
    for key, value in scope.filters.items():
        if value is None:
            continue
        clauses.append(_clause(space, key, str(value).lower(), metadata_keys))
    if scope.exclude_case_ids:
        clauses.append(f"case_id not in {_literal_list(scope.exclude_case_ids)}")
    if scope.exclude_patient_ids:
        clauses.append(f"patient_id not in {_literal_list(scope.exclude_patient_ids)}")
    if scope.reported_only or space == "text":
        clauses.append("reported == true")
    return " and ".join(f"({c})" for c in clauses)


def _clause(space: str, key: str, value: str, metadata_keys: Collection[str]) -> str:
    if key in {"patient_id", "case_id"}:
        return f"{key}_lc == {literal(value)}"
    if key in {"modality", "body_region"}:
        return f"{key}_lc == {literal(value)}" if space == "image" else f"array_contains({key}_lc, {literal(value)})"
    if key not in metadata_keys:
        known = ", ".join([*FIXED_FIELDS, *sorted(metadata_keys)])
        raise UnknownFilterFieldError(f"unknown filter field {key!r}; this index can be filtered by: {known}")
    path = f"meta_lc[{literal(key)}]"
    return f"{path} == {literal(value)}" if space == "image" else f"json_contains({path}, {literal(value)})"


def id_list(field: str, ids: Collection[int]) -> str:
    """`field in [...]` for integer row ids (never text, so nothing to escape)."""
    return f"{field} in [{', '.join(str(int(i)) for i in ids)}]"


def text_list(field: str, values: Collection[str]) -> str:
    """`field in [...]` for string values, each a quoted literal."""
    return f"{field} in {_literal_list(values)}"
