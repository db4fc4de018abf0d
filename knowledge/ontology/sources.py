"""Readers for the ontology files: RadLex (`term,RID,parent RID`) and Open Imaging Finding Models (JSONL).

Both accept plain or gzip-compressed files, so the bundled copies under `data/ontology/` stay small.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kgreport.json_types import JsonObject, UncheckedJson


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    return path.open(encoding="utf-8")


@dataclass(frozen=True)
class RadLexTerm:
    rid: str
    name: str
    parent: str | None


@dataclass(frozen=True)
class FindingModel:
    """What kgreport uses of an Open Imaging Finding Model."""

    oifm_id: str
    name: str
    description: str = ""
    synonyms: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    anatomy_rids: tuple[str, ...] = ()  # RadLex codes of the finding itself (mostly its organ)
    location_names: tuple[str, ...] = ()  # values of its location attribute
    related_names: tuple[str, ...] = ()  # other findings its attributes name (associated findings, complications)
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)


def read_radlex(path: str | Path) -> Iterator[RadLexTerm]:
    """RadLex rows; the header row, if any, and rows without an RID are skipped."""
    with _open_text(Path(path)) as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or not row[1].startswith("RID"):
                continue
            parent = row[2].strip() if len(row) > 2 and row[2].strip().startswith("RID") else None
            yield RadLexTerm(rid=row[1].strip(), name=row[0].strip(), parent=parent)


def _codes(items: list[UncheckedJson] | None) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for item in items or []:
        if item.get("system") and item.get("code"):
            out.setdefault(str(item["system"]).upper(), []).append(str(item["code"]))
    return {k: tuple(v) for k, v in out.items()}


# Attributes every finding model has; their values are qualifiers ("absent", "stable"), never findings.
GENERIC_ATTRIBUTES = frozenset({"presence", "change from prior", "location"})


def _related_names(attributes: list[UncheckedJson]) -> list[str]:
    """Names an attribute gives that may be other findings: its own name ("pleural effusion" as an
    attribute of a CABG finding) and its values ("emphysema" under "associated findings"). Which of
    them really are findings is decided at load time, against the finding-model names."""
    names: list[str] = []
    for attribute in attributes:
        name = str(attribute.get("name", "")).replace("_", " ").strip()
        if name.lower() in GENERIC_ATTRIBUTES:
            continue
        names.append(name)
        names += [str(v["name"]) for v in attribute.get("values") or [] if v.get("name")]
    return names


def finding_model_from_json(row: UncheckedJson) -> FindingModel:
    locations: list[str] = []
    attributes = row.get("attributes") or []
    for attribute in attributes:
        if str(attribute.get("name", "")).lower() == "location":
            locations += [str(v["name"]) for v in attribute.get("values") or [] if v.get("name")]
    related = row["related"] if "related" in row else _related_names(attributes)
    codes = _codes(row.get("index_codes"))
    return FindingModel(
        oifm_id=str(row["oifm_id"]),
        name=str(row["name"]).strip(),
        description=str(row.get("description") or ""),
        synonyms=tuple(str(s) for s in row.get("synonyms") or []),
        tags=tuple(str(t) for t in row.get("tags") or []),
        anatomy_rids=codes.get("RADLEX", ()),
        location_names=tuple(locations),
        related_names=tuple(dict.fromkeys(str(n) for n in related)),
        codes=codes,
    )


def read_finding_models(path: str | Path) -> Iterator[FindingModel]:
    with _open_text(Path(path)) as handle:
        for line in handle:
            if line.strip():
                yield finding_model_from_json(json.loads(line))


def compact_finding_model(model: FindingModel) -> JsonObject:
    """The fields kgreport bundles (a tenth of the source file's size)."""
    return {
        "oifm_id": model.oifm_id,
        "name": model.name,
        "description": model.description,
        "synonyms": list(model.synonyms),
        "tags": list(model.tags),
        "index_codes": [{"system": s, "code": c} for s, cs in model.codes.items() for c in cs],
        "attributes": [{"name": "location", "values": [{"name": n} for n in model.location_names]}]
        if model.location_names
        else [],
        "related": list(model.related_names),
    }
