"""The vocabulary finding extraction links to, built from the ontology files.

Findings: every Open Imaging Finding Model (name + synonyms) and the RadLex terms under "clinical
finding" (RID34785) and "imaging observation" (RID5). Anatomy (for locations): RadLex terms under
"anatomical entity" (RID3). When a finding model and a RadLex finding share a name, the finding model
wins (it carries synonyms and locations; its RadLex twin is reachable by SAME_AS).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from knowledge.ontology.sources import read_finding_models, read_radlex

FINDING_ROOTS = ("RID34785", "RID5")
ANATOMY_ROOTS = ("RID3",)
MIN_ALIAS_CHARS = 3  # "no", "mr", "ct" are words, not findings


@dataclass(frozen=True)
class LexiconEntry:
    concept_id: str
    name: str
    aliases: tuple[str, ...]
    kind: str  # "finding" | "anatomy"


def _subtree(children: dict[str, list[str]], roots: tuple[str, ...]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        rid = stack.pop()
        if rid not in seen:
            seen.add(rid)
            stack.extend(children.get(rid, []))
    return seen - set(roots)


def build_lexicon(radlex_path: Path, finding_models_path: Path) -> list[LexiconEntry]:
    terms = list(read_radlex(radlex_path))
    children: dict[str, list[str]] = defaultdict(list)
    for term in terms:
        if term.parent:
            children[term.parent].append(term.rid)
    findings, anatomy = _subtree(children, FINDING_ROOTS), _subtree(children, ANATOMY_ROOTS)
    entries: list[LexiconEntry] = []
    taken: set[str] = set()
    for model in read_finding_models(finding_models_path):
        aliases = tuple(dict.fromkeys(a for a in (model.name, *model.synonyms) if len(a) >= MIN_ALIAS_CHARS))
        if aliases:
            entries.append(LexiconEntry(model.oifm_id, model.name, aliases, "finding"))
            taken |= {a.lower() for a in aliases}
    for term in terms:
        if len(term.name) < MIN_ALIAS_CHARS or term.name.lower() in taken:
            continue
        if term.rid in findings:
            entries.append(LexiconEntry(term.rid, term.name, (term.name,), "finding"))
        elif term.rid in anatomy:
            entries.append(LexiconEntry(term.rid, term.name, (term.name,), "anatomy"))
    return entries


def lexicon_fingerprint(entries: list[LexiconEntry]) -> str:
    """A short hash naming on-disk caches built from this lexicon."""
    digest = hashlib.sha1()
    for e in entries:
        digest.update(f"{e.concept_id}\t{e.kind}\t{'|'.join(e.aliases)}\n".encode())
    return digest.hexdigest()[:12]
