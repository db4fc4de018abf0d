"""The vocabulary finding extraction links to, built from the ontology files.

Findings: every Open Imaging Finding Model (name + synonyms) and the RadLex terms under "clinical
finding" (RID34785) and "imaging observation" (RID5). Anatomy (for locations): RadLex terms under
"anatomical entity" (RID3). When a finding model and a RadLex finding share a name, the finding model
wins (it carries synonyms and locations; its RadLex twin is reachable by SAME_AS).

An alias names one concept. A concept's own name beats another concept's synonym: "mass" is the
RadLex term "mass", not a synonym of the finding model "pulmonary mass"; a synonym two finding models
share stays with the first. Aliases that are not findings on their own in a report (descriptors such
as "margin", "focus", "echotexture", "enhancing"; "absence", which is a negation; "compression", which
is as often the ultrasound manoeuvre) are left out, and a trailing "*" (a wildcard mark in some finding
models) is dropped. A short list of report shorthand the ontology lacks ("mets", "adenopathy", "free
air") is added to the concepts it names (RADIOLOGY_SYNONYMS).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from kgreport.knowledge.ontology.sources import read_finding_models, read_radlex

FINDING_ROOTS = ("RID34785", "RID5")
ANATOMY_ROOTS = ("RID3",)
MIN_ALIAS_CHARS = 3  # "no", "mr", "ct" are words, not findings
NON_FINDING_ALIASES = frozenset(
    {
        "absence",
        "assessment",
        "attachment",
        "bi-rads",
        "cast",
        "compression",
        "echotexture",
        "enhancing",
        "fade",
        "foci",
        "focus",
        "halo",
        "infrapatellar",
        "margin",
        "nonenhancing",
        "symptom",
        "tail",
        "thymus",
        "tilt",
    }
)


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


# Shorthand radiologists write for concepts whose ontology entries do not list it.
RADIOLOGY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "RID5231": ("mets", "metastatic disease"),  # metastasis
    "RID3798": ("adenopathy", "enlarged lymph node", "enlarged lymph nodes"),  # lymphadenopathy
    "OIFM_CDE_000228": ("free air", "free intraperitoneal air", "free intraperitoneal gas"),  # pneumoperitoneum
    "RID5172": ("infarct",),  # infarction
    "RID4700": ("bleeding", "bleed"),  # hemorrhage
    "RID4776": ("locked facet",),  # jumped facet
    "RID38590": ("ASD",),  # atrial septal defect
    "RID34662": ("sarcoid",),  # sarcoidosis
    "OIFM_GMTS_023339": ("PTX",),  # pneumothorax
}


def _clean(alias: str) -> str:
    return alias.strip().rstrip("*").strip()


def _usable(alias: str) -> bool:
    return len(alias) >= MIN_ALIAS_CHARS and alias.lower() not in NON_FINDING_ALIASES


def build_lexicon(radlex_path: Path, finding_models_path: Path) -> list[LexiconEntry]:
    terms = list(read_radlex(radlex_path))
    children: dict[str, list[str]] = defaultdict(list)
    for term in terms:
        if term.parent:
            children[term.parent].append(term.rid)
    findings, anatomy = _subtree(children, FINDING_ROOTS), _subtree(children, ANATOMY_ROOTS)
    models = list(read_finding_models(finding_models_path))
    # Names first: an alias that is some concept's own name belongs to that concept only.
    names = {_clean(m.name).lower() for m in models}
    names |= {t.name.lower() for t in terms if t.rid in findings}
    entries: list[LexiconEntry] = []
    taken: set[str] = set()
    for model in models:
        name = _clean(model.name)
        synonyms = [*map(_clean, model.synonyms), *RADIOLOGY_SYNONYMS.get(model.oifm_id, ())]
        aliases = [name] + [a for a in synonyms if a.lower() not in names]
        kept: list[str] = []
        for alias in aliases:
            if _usable(alias) and alias.lower() not in taken:  # also drops a second spelling of one alias
                kept.append(alias)
                taken.add(alias.lower())
        if kept:
            entries.append(LexiconEntry(model.oifm_id, name, tuple(kept), "finding"))
    model_aliases = set(taken)
    for term in terms:
        if term.rid in findings and _usable(term.name) and term.name.lower() not in taken:
            extra = [a for a in RADIOLOGY_SYNONYMS.get(term.rid, ()) if a.lower() not in taken | names]
            entries.append(LexiconEntry(term.rid, term.name, (term.name, *extra), "finding"))
            taken |= {a.lower() for a in (term.name, *extra)}
        elif term.rid in anatomy and len(term.name) >= MIN_ALIAS_CHARS and term.name.lower() not in model_aliases:
            entries.append(LexiconEntry(term.rid, term.name, (term.name,), "anatomy"))
    return entries


def lexicon_fingerprint(entries: list[LexiconEntry]) -> str:
    """A short hash naming on-disk caches built from this lexicon."""
    digest = hashlib.sha1()
    for e in entries:
        digest.update(f"{e.concept_id}\t{e.kind}\t{'|'.join(e.aliases)}\n".encode())
    return digest.hexdigest()[:12]
