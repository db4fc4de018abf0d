"""Notes mode: the Findings as one or more checked sentences per notes item, and an Impression that sums them up.

The refiner writes the notes out as prose. Each of its sentences is matched to the notes item it writes out
(the item whose words it shares most, at least half of them), and checked against that item
(`generator.item_check`). An item keeps the refiner's sentences that pass; an item with none gets its plain
expansion (`write_item`). A sentence matched to no item, or failing its item's check, is listed in `removed`
with the reason. The Findings follow the order of the notes, so no item is lost, moved or flipped.

The Impression names the leading findings (the first items stated present or possible, as the radiologist
typed them first; a normal one, "tendons normal", does not lead), then the differential with a hedge that
says how strong it is: "most consistent with X" only when the similar cases and the graph agree on X, else
"differential includes X, Y, Z". A diagnosis is named only with support: the graph's differential of a
stated finding, or at least two similar cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kgreport.generator.differential import DifferentialItem, short_diagnosis
from kgreport.generator.item_check import check_sentence, content_words, same_word, write_item
from kgreport.generator.report import removal
from kgreport.knowledge.extraction.notes_items import NotesItem
from kgreport.knowledge.ontology.diagnosis_ranking import StatedFinding

MIN_OVERLAP = 0.5  # share of an item's words a sentence must share to be taken as writing it out
LEADING_ITEMS = 2
MIN_CASES = 2  # similar cases that must share a diagnosis before the Impression names it without the graph


@dataclass(frozen=True)
class WrittenItem:
    item: NotesItem
    sentences: tuple[str, ...]
    how: str  # "refined" (the refiner's sentences, checked) | "expanded" (the item written out plainly)


@dataclass(frozen=True)
class Removal:
    sentence: str
    reason: str

    def as_text(self) -> str:
        return removal(self.sentence, self.reason)


def _overlap(sentence: str, item: NotesItem) -> float:
    own = content_words(item.text)
    if not own:
        return 0.0
    said = content_words(sentence)
    return sum(any(same_word(w, s) for s in said) for w in own) / len(own)


def align(sentences: Sequence[str], items: Sequence[NotesItem]) -> tuple[dict[int, list[str]], list[str]]:
    """Each sentence to the item it writes out ({item index: sentences}), and the sentences that write none."""
    matched: dict[int, list[str]] = {}
    unmatched = []
    for sentence in sentences:
        scores = [_overlap(sentence, item) for item in items]
        best = max(range(len(items)), key=lambda i: (scores[i], -i), default=None)
        if best is None or scores[best] < MIN_OVERLAP:
            unmatched.append(sentence)
        else:
            matched.setdefault(best, []).append(sentence)
    return matched, unmatched


def write_findings(
    items: Sequence[NotesItem], refined: Sequence[str], *, header: str = "", modality: str | None = None
) -> tuple[list[WrittenItem], list[Removal]]:
    """The Findings, item by item (see the module docstring), and what was taken out of the refiner's text."""
    matched, unmatched = align(refined, items)
    removed = [Removal(s, "states nothing the notes say") for s in unmatched]
    written = []
    for item in items:
        tried, seen = [], set()
        for sentence in matched.get(item.index, []):
            key = " ".join(sentence.lower().split())
            if key in seen:
                removed.append(Removal(sentence, f"notes item {item.index + 1}: repeats a sentence"))
            else:
                tried.append(sentence[:1].upper() + sentence[1:])  # "mediastinum otherwise unremarkable."
                seen.add(key)
        if item.kind != "finding":  # the exam and the history are written as typed
            removed += [
                Removal(s, f"notes item {item.index + 1}: the exam or history, written as typed") for s in tried
            ]
            written.append(WrittenItem(item, (write_item(item),), "expanded"))
            continue
        joined = " ".join(tried)
        if tried and check_sentence(joined, item, header, modality).ok:
            written.append(WrittenItem(item, tuple(tried), "refined"))
            continue
        kept = next((s for s in tried if check_sentence(s, item, header, modality).ok), None)
        for sentence in tried:
            if sentence != kept:
                why = check_sentence(sentence, item, header, modality).reasons or ("repeats the item",)
                removed.append(Removal(sentence, f"notes item {item.index + 1}: {'; '.join(why)}"))
        written.append(
            WrittenItem(item, (kept,), "refined") if kept else WrittenItem(item, (write_item(item),), "expanded")
        )
    return written, removed


def contradicts_negatives(name: str, items: Sequence[NotesItem]) -> bool:
    """Whether a diagnosis is what an item of the notes denies: every word of one denied finding is a word of
    its name, or one it is named by ("Pulmonary embolism" against "no PE", "Acute ischemic stroke" against "no
    acute infarct", "Pleural effusion" against "no effusion, consolidation or PTX"), or a structure the notes call
    normal is the site of a disease ("Plantaris tendon tear" against "tendons normal")."""
    words = [_SAME_AS.get(w, w) for w in content_words(name)]
    return bool(words) and any(
        denied and all(any(same_word(d, w) for w in words) for d in denied)
        for item in items
        for denied in (_denied_findings(item) if item.status == "absent" else _normal_structures(item))
    )


def _normal_structures(item: NotesItem) -> list[list[str]]:
    """The structure a normal item names ("tendons normal", "coronaries nl": the tendons, the coronaries); none
    for a whole study ("normal study") or an item that is not a normal statement."""
    text = item.text.lower().strip(" .")
    if item.kind != "finding" or item.status != "present" or not _NORMAL.search(text):
        return []
    subject = [w for w in content_words(_NORMAL_WORDS.sub(" ", text)) if w not in _WHOLE_STUDY]
    return [subject] if subject else []


# A diagnosis is named by other words than a finding: the finding's word for each.
_SAME_AS = {"stroke": "infarct", "infarction": "infarct", "hematoma": "hemorrhage", "bleed": "hemorrhage"}
_LIST_SPLIT = re.compile(r",\s*|\s+(?:or|nor|and)\s+")


# Qualifiers a denial may carry that do not narrow what it denies: "no acute infarct" denies an infarct,
# "no intracranial hemorrhage" a hemorrhage; a place ("no odontoid fracture") does narrow it.
_GENERIC_QUALIFIERS = frozenset(
    [
        "acute",
        "new",
        "significant",
        "focal",
        "definite",
        "obvious",
        "gross",
        "intracranial",
        "evidence",
        "sign",
        "signs",
        "any",
        "appreciable",
        "discrete",
        "seen",
        "identified",
        "demonstrated",
        "suggest",
        "mra",
        "cta",
        "ct",
        "mri",
        "mr",
    ]
)


def _denied_findings(item: NotesItem) -> list[list[str]]:
    """The content words of each finding an absent item denies ("no effusion, consolidation or PTX": three),
    generic qualifiers dropped."""
    body = re.sub(r"^(?:no|without|negative for|neg for|free of|absence of)\s+", "", item.text, flags=re.IGNORECASE)
    out = []
    for part in _LIST_SPLIT.split(body):
        part = re.sub(r"^(?:no|without)\s+", "", part, flags=re.IGNORECASE)  # "no dissection, no coarctation"
        words = [_SAME_AS.get(w, w) for w in content_words(part)]
        narrow = [w for w in words if w not in _GENERIC_QUALIFIERS]
        if words:
            out.append(narrow or words)
    return out


_NORMAL_WORDS = re.compile(r"\b(?:normal|unremarkable|negative|intact|patent|preserved|clear|appear|appears|are|is)\b")
_WHOLE_STUDY = frozenset({"study", "exam", "examination", "scan", "ct", "mri", "mr", "findings", "otherwise"})
_NORMAL = re.compile(r"^(?:normal|unremarkable|negative)\b|\b(?:normal|unremarkable|intact|patent|preserved|clear)$")


def stated_findings(items: Sequence[NotesItem]) -> list[StatedFinding]:
    """The notes' findings as the knowledge base ranks them: abnormal ones stated, denials kept as absent;
    the exam, the history and normal items ("normal study", "tendons normal") say nothing of a disease."""
    out = []
    for item in items:
        if item.kind != "finding":
            continue
        if item.status == "absent":
            out.append(StatedFinding(item.text, "absent"))
        elif is_abnormal(item):
            out.append(StatedFinding(item.text, item.status))
    return out


def is_abnormal(item: NotesItem) -> bool:
    """A finding stated present or possible that is not a normal one ("normal study", "tendons normal")."""
    return item.status in ("present", "uncertain") and not _NORMAL.search(item.text.lower().strip(" ."))


def _phrase(sentence: str) -> str:
    """A findings sentence as a phrase of the impression: "There is a right frontal mass." → "right frontal mass"."""
    text = sentence.strip().rstrip(".")
    text = re.sub(r"^(?:there (?:is|are)\s+(?:an?\s+)?)", "", text, flags=re.IGNORECASE)
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _name(item: DifferentialItem) -> str:
    return short_diagnosis(item.name)


def impression(written: Sequence[WrittenItem], differential: Sequence[DifferentialItem]) -> tuple[str, tuple[int, ...]]:
    """The Impression and the notes items it cites (1-based, as the Findings number them)."""
    findings = [w for w in written if w.item.kind == "finding"]
    # "It destroys T9 body" goes on about the finding before it: not a finding of its own to lead with
    leading = [w for w in findings if is_abnormal(w.item) and not w.sentences[0].startswith("It ")][:LEADING_ITEMS]
    written = findings
    if not leading:
        negatives = "; ".join(_phrase(w.sentences[0]) for w in written[:LEADING_ITEMS])
        text = (
            f"No acute abnormality stated in the notes ({negatives})."
            if negatives
            else "No finding stated in the notes."
        )
        return text, tuple(w.item.index + 1 for w in written[:LEADING_ITEMS])
    phrases = [_phrase(w.sentences[0]) for w in leading]
    lead = " and ".join(phrases)
    lead = lead[:1].upper() + lead[1:]
    # Only a diagnosis with support is named: the graph's differential of a stated finding, or several similar
    # cases (one neighbour's diagnosis alone is a guess); the report's differential lists them all.
    supported = [d for d in differential if _name(d) and (d.concept_ids or len(d.case_ids) >= MIN_CASES)]
    names = [_name(d) for d in supported]
    if not names:
        return f"{lead}.", tuple(w.item.index + 1 for w in leading)
    top = supported[0]
    if top.case_ids and top.concept_ids:  # the similar cases and the graph agree on it
        rest = f"; differential includes {', '.join(names[1:4])}" if len(names) > 1 else ""
        text = f"{lead}, most consistent with {names[0]}{rest}."
    else:
        text = f"{lead}. Differential includes {', '.join(names[:4])}."
    return text, tuple(w.item.index + 1 for w in leading)
