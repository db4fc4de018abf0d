"""The radiologist's notes: shorthand typed with the image ("RUL 2cm spiculated nodule, no effusion,
mediastinal LAD") that the report is written from.

`prepare_notes` makes typed notes safe and readable: control characters out, a length cap (cut at a
sentence or word boundary, and said so in `limitations`), shorthand expanded and each item made its own
sentence, so that "no effusion" denies the effusion and nothing after it (`knowledge.extraction.shorthand`).

`simulate_notes` writes the notes a radiologist might have typed for a reference report, for training and
evaluation where reports exist but notes do not. It is built from the extractor's findings of the report
only, never from its text: each finding's concept name ("no" before an absent one, "possible" or "?" with
an uncertain one, the laterality its own text span states), in random order, abbreviated, with some
filler words dropped.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kgreport.errors import InvalidInput
from kgreport.knowledge.extraction.shorthand import abbreviate, as_sentences, expand_shorthand

if TYPE_CHECKING:  # the extractor pulls in spaCy; simulating notes only reads its findings
    from kgreport.knowledge.extraction.extractor import Finding

MAX_NOTES_CHARS = 2000
STATUS_ORDER = ("present", "uncertain", "absent")  # which statement of a concept the notes keep
LATERALITY = ("bilateral", "right", "left")
# Words notes leave out without changing what they say (the extractor's linker also ignores them); every
# other word of a concept name is kept: "small bowel obstruction" is not a "bowel obstruction".
FILLER_WORDS = frozenset({"a", "an", "the", "of", "and", "or", "and/or", "in", "on", "at", "with", "to", "for"})
_BOUNDARIES = (". ", ".\n", "\n", "; ", ", ")


class NotesError(InvalidInput):
    """Notes that cannot be used: empty, or only whitespace and control characters."""

    code = "bad_notes"


@dataclass(frozen=True)
class Notes:
    """Typed notes: `raw` as typed (control characters out, cut to the length cap), `expanded` with the
    shorthand written out and one sentence per item, `limitations` what was done to them (a cut)."""

    raw: str
    expanded: str
    limitations: tuple[str, ...] = ()


def _clean(text: str) -> str:
    """Control and format characters out (line breaks kept, tabs made spaces), ends stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return "".join(c for c in text if c == "\n" or unicodedata.category(c) not in {"Cc", "Cf"}).strip()


def _cut(text: str, max_chars: int) -> str:
    """At most max_chars: up to the last sentence or item end in the second half of the window, else the
    last space, else exactly max_chars."""
    window = text[: max_chars + 1]  # a cut right at the limit is fine when a boundary follows it
    best = max(window.rfind(boundary) for boundary in _BOUNDARIES)
    if best >= max_chars // 2:
        return text[: best + 1].strip()
    space = window.rfind(" ")
    return (text[:space] if space > 0 else text[:max_chars]).strip()


def prepare_notes(text: str | None, max_chars: int = MAX_NOTES_CHARS) -> Notes | None:
    """None for no notes; the cleaned, capped and expanded notes otherwise. Raises NotesError for notes
    with nothing in them and for a cap below one character."""
    if text is None:
        return None
    if max_chars < 1:
        raise NotesError(f"max_chars must be at least 1, got {max_chars}")
    cleaned = _clean(text)
    if not cleaned:
        raise NotesError("notes are empty")
    limitations: tuple[str, ...] = ()
    if len(cleaned) > max_chars:
        limitations = (f"notes cut to {max_chars} of {len(cleaned)} characters",)
        cleaned = _cut(cleaned, max_chars)
    return Notes(raw=cleaned, expanded=as_sentences(expand_shorthand(cleaned)), limitations=limitations)


def _words(name: str) -> list[str]:
    """A concept name as notes words: lower-case except acronyms ("Pleural Effusion" → pleural effusion)."""
    return [w if w.isupper() and len(w) > 1 else w.lower() for w in name.split()]


def _phrase(finding: Finding, rng: random.Random, drop_word_rate: float) -> str:
    words = _words(finding.name)
    own = re.findall(r"[a-z]+", finding.text.lower())
    side = next((w for w in LATERALITY if w in own and w not in words), None)
    head = len(words) - 1
    kept = [w for i, w in enumerate(words) if i == head or w not in FILLER_WORDS or rng.random() >= drop_word_rate]
    phrase = " ".join(([side] if side else []) + kept)
    if finding.status == "absent":
        return f"no {phrase}"
    if finding.status == "uncertain":
        return rng.choice((f"?{phrase}", f"{phrase}?", f"possible {phrase}"))
    return phrase


def simulate_notes(findings: Sequence[Finding], rng: random.Random, *, drop_word_rate: float = 0.15) -> str:
    """Notes a radiologist might type for the report these findings were extracted from: one short phrase
    per concept (its most positive statement), shuffled, abbreviated (`abbreviate`), filler words dropped
    with probability `drop_word_rate`, joined by ", " or "; ". Deterministic given `rng`; "" for no
    findings. "no", "possible"/"?", laterality and a name's last word are never dropped."""
    best: dict[str, Finding] = {}
    for finding in findings:
        if finding.status not in STATUS_ORDER:
            continue
        kept = best.get(finding.concept_id)
        if kept is None or STATUS_ORDER.index(finding.status) < STATUS_ORDER.index(kept.status):
            best[finding.concept_id] = finding
    chosen = list(best.values())
    rng.shuffle(chosen)
    phrases = [abbreviate(_phrase(finding, rng, drop_word_rate), rng) for finding in chosen]
    return rng.choice((", ", "; ")).join(phrases) if phrases else ""
