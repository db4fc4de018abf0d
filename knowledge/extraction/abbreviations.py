"""The abbreviation lexicon notes are read with: a maintained radiology synonyms table, and our own file.

Two sources, ours first:
- `data/shorthand.tsv` (this package): the shorthand radiologists type in notes ("RUL", "b/l", "heterog",
  "hydro"), each with how it may match (any case, or only as typed: "PE", "MS"), and, for an abbreviation
  with several senses ("PD": pancreatic duct or proton density; "CC": corpus callosum or craniocaudal), the
  cue words of the item (and the study's modality) that choose each sense. Rows marked `keep` are never
  expanded ("T2", "FLAIR", "CT": a report writes them as typed).
- `radiology-semantic-dict` (PyPI, MIT): its radiology synonyms table, about 700 entries, of which the
  acronyms (the key's letters in order in its expansion: "ggo" → "ground glass opacity") are taken, matched
  only as typed in upper case ("GGO", "AVM"), since many are also words in lower case ("lip", "fast").
An abbreviation our file names is read from our file only.
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kgreport.errors import InvalidInput

SHORTHAND_TSV = Path(__file__).parent / "data" / "shorthand.tsv"
MATCHES = ("any", "as_written", "keep")


class LexiconError(InvalidInput):
    """A lexicon file that cannot be read: a bad row, an unknown match kind, senses without cues."""

    code = "lexicon_unreadable"


@dataclass(frozen=True)
class Sense:
    expansion: str
    cues: tuple[str, ...] = ()  # lower-case word prefixes of an item that choose this sense
    modalities: tuple[str, ...] = ()  # "CT", "MR": the study's modality chooses this sense
    default: bool = False  # taken when no sense's cue is found


@dataclass(frozen=True)
class Abbreviation:
    key: str  # as it is written in the lexicon ("RUL", "hx", "GGO")
    senses: tuple[Sense, ...]
    case_sensitive: bool  # only as typed
    source: str  # "kgreport" | "radiology-semantic-dict"

    def resolve(self, context: str, modality: str | None = None, *, use_default: bool = True) -> str | None:
        """The expansion for an item reading `context`: the one sense, else the sense with the most cues found
        (the modality counting as one), else the default sense (with `use_default`), else None (left as typed)."""
        if len(self.senses) == 1:
            return self.senses[0].expansion
        words = re.findall(r"[a-z0-9]+", context.lower())
        text = " ".join(words)
        own = self.key.lower()

        def score(sense: Sense) -> int:
            hits = sum(1 for cue in sense.cues if cue != own and _cue_found(cue, words, text))
            return hits + int(bool(modality) and (modality or "").upper() in sense.modalities)

        scores = [score(s) for s in self.senses]
        best = max(scores)
        if best > 0 and scores.count(best) == 1:
            return self.senses[scores.index(best)].expansion
        default = [s for s in self.senses if s.default]
        return default[0].expansion if use_default and default and best == 0 else None


def _cue_found(cue: str, words: list[str], text: str) -> bool:
    if " " in cue:
        return f" {cue}" in f" {text}"
    return any(w.startswith(cue) for w in words)


@dataclass(frozen=True)
class Lexicon:
    entries: Mapping[str, Abbreviation]  # by key as written (ours) or upper-cased (the synonyms table)
    kept: frozenset[str]  # never expanded, lower-cased

    def primary(self, source: str | None = None) -> dict[str, str]:
        """Abbreviation → its one sense (when no cue is needed), or its default sense (from `source` only, when
        given); an abbreviation read only by its cues is left out."""
        out = {}
        for a in self.entries.values():
            if source is not None and a.source != source:
                continue
            senses = [s for s in a.senses if s.default or (len(a.senses) == 1 and not s.cues)]
            if senses:
                out[a.key] = senses[0].expansion
        return out


def _is_acronym(key: str, expansion: str) -> bool:
    """The key's letters appear in order in the expansion, starting with its first letter ("ggo" → "ground
    glass opacity", "appy" → "appendicitis"), and the expansion is longer: not a synonym ("mass" → "lesion")."""
    letters = re.sub(r"[^a-z0-9]", "", key.lower())
    target = re.sub(r"[^a-z0-9]", "", expansion.lower())
    if len(letters) < 2 or len(target) < len(letters) + 3 or not target.startswith(letters[0]):
        return False
    at = 0
    for char in letters:
        at = target.find(char, at)
        if at < 0:
            return False
        at += 1
    return True


def read_shorthand(path: Path = SHORTHAND_TSV) -> tuple[dict[str, Abbreviation], set[str]]:
    """Our file: (abbreviations by key, keys kept as typed)."""
    rows: dict[str, list[tuple[str, str, str]]] = {}
    kept: set[str] = set()
    with path.open(newline="") as handle:
        lines = (line for line in handle if line.strip() and not line.startswith("#"))
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or header[:2] != ["abbreviation", "expansion"]:
            raise LexiconError(f"{path}: the first row must be the header abbreviation, expansion, match, context")
        for number, row in enumerate(reader, start=2):
            if len(row) < 3 or not row[0] or not row[1]:
                raise LexiconError(f"{path}: row {number} needs abbreviation, expansion and match: {row}")
            key, expansion, match = row[0], row[1], row[2]
            if match not in MATCHES:
                raise LexiconError(f"{path}: row {number} ({key}): match must be one of {MATCHES}, not {match!r}")
            if match == "keep":
                kept.add(key.lower())
                continue
            rows.setdefault(key, []).append((expansion, match, row[3] if len(row) > 3 else ""))
    entries = {}
    for key, senses in rows.items():
        if len({m for _, m, _ in senses}) != 1:
            raise LexiconError(f"{path}: the senses of {key} must share one match kind")
        built = []
        for expansion, _, context in senses:
            cues = [c.strip() for c in context.split("|") if c.strip()]
            built.append(
                Sense(
                    expansion=expansion,
                    cues=tuple(c.lower() for c in cues if not c.startswith("@") and c != "*"),
                    modalities=tuple(c[1:].upper() for c in cues if c.startswith("@")),
                    default="*" in cues,
                )
            )
        if len(built) > 1 and any(not (s.cues or s.modalities or s.default) for s in built):
            raise LexiconError(f"{path}: {key} has several senses, so each needs cue words (or * for the default)")
        entries[key] = Abbreviation(key, tuple(built), senses[0][1] == "as_written", "kgreport")
    return entries, kept


def read_synonyms_table() -> dict[str, Abbreviation]:
    """radiology-semantic-dict's acronyms, keyed upper-case, matched only as typed in upper case."""
    source = importlib.resources.files("radiology_semantic") / "data" / "radiology_synonyms.json"
    table = json.loads(source.read_text(encoding="utf-8"))
    out = {}
    for key, values in table.items():
        expansions = [v for v in values if isinstance(v, str)]
        if not expansions or " " in key or not _is_acronym(key, expansions[0]):
            continue
        upper = key.upper()
        out[upper] = Abbreviation(upper, (Sense(expansions[0]),), True, "radiology-semantic-dict")
    return out


@cache
def load_lexicon(path: Path = SHORTHAND_TSV) -> Lexicon:
    """The lexicon notes are read with (cached: both files are read once per process)."""
    ours, kept = read_shorthand(path)
    lowered = {k.lower() for k in ours} | kept
    entries: dict[str, Abbreviation] = {k: v for k, v in read_synonyms_table().items() if k.lower() not in lowered}
    entries.update(ours)
    return Lexicon(entries=entries, kept=frozenset(kept))
