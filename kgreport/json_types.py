"""The type of a JSON document, for what leaves the process as JSON (an answer, a manifest, a model card).

`Json` is read-only (`Sequence`, `Mapping`), so any record's lists, tuples and dicts of JSON values fit it
without a copy, and a value read back out of it must be narrowed (`isinstance`) before use: mypy then
checks both what goes into a document and how it is read, where `dict[str, Any]` checked neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

Json: TypeAlias = "str | int | float | bool | None | Sequence[Json] | Mapping[str, Json]"
JsonObject: TypeAlias = "dict[str, Json]"  # a fresh document, its own to change (what `as_json` returns)
JsonMapping: TypeAlias = "Mapping[str, Json]"  # one read, not changed (what `from_json` takes)
# A JSON object (or CSV row) as `json.loads` or a reader hands it over, before its fields are checked:
# its values really are of any type, and the parser that takes one checks each field it reads.
UncheckedJson: TypeAlias = "dict[str, Any]"


def json_object(value: Json, what: str) -> JsonMapping:
    """`value` as a JSON object, or a `ValueError` naming `what` it should have been."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def json_list(value: Json, what: str) -> Sequence[Json]:
    """`value` as a JSON array (a string is not one), or a `ValueError` naming `what`."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{what}: expected a JSON array, got {type(value).__name__}")
    return value


def json_text(value: Json) -> str | None:
    """`value` when it is a string, else None: how an optional text field of a document is read."""
    return value if isinstance(value, str) else None
