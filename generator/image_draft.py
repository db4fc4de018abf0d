"""What an image-only draft may say of this patient: nothing that belongs to the similar case it was copied from.

An image-only draft starts from another patient's report. Its measurements ("This mass measures
approximately 2.9 cm"), dates, ages, sex and sides are that patient's, not this one's (the image evidence
predicts modality and region, never a size or a side), and its diagnosis is that patient's diagnosis. So:
- measurements are taken out of a sentence ("a 2.9 cm mass" → "a mass"; "measuring 3 x 4 cm" goes); a
  sentence left saying nothing ("This mass measures.") goes;
- a sentence naming an age, a sex or a date goes;
- sides are taken out ("in the left lateral ventricle" → "in the lateral ventricle", "on the right" goes);
- a sentence cut off (no full stop, an ellipsis, a last word that cannot end a sentence) goes;
- the Impression says what the similar cases were, "Similar prior cases: X (MPX1), Y (MPX2).", never a
  diagnosis as this patient's.
Each change is listed, with why, for `removed`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_NUMBER = r"\d+(?:\.\d+)?(?:\s*(?:x|×|by)\s*\d+(?:\.\d+)?)*"
_UNIT = r"(?:mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?|ml|cc)"
_MEASURING = re.compile(
    rf",?\s*(?:which\s+|and\s+|that\s+)?(?:measur(?:es|ing|ed)|spanning|spans|up to)\s+(?:approximately\s+|about\s+|"
    rf"roughly\s+|up to\s+|nearly\s+)?{_NUMBER}\s*{_UNIT}(?:\s+in\s+(?:greatest\s+|maximal\s+|maximum\s+)?"
    rf"(?:diameter|size|dimension|length|width|thickness|extent))?",
    re.IGNORECASE,
)
_SIZE = re.compile(rf"\(?\b(?:approximately\s+|about\s+)?{_NUMBER}\s*-?\s*{_UNIT}\b\)?\s*", re.IGNORECASE)
_AGE_SEX = re.compile(
    r"\b\d+[- ](?:year|yr|month|week|day)s?[- ]old\b|\b(?:male|female|man|woman|boy|girl|gentleman|lady|"
    r"he|she|his|her|him)\b",
    re.IGNORECASE,
)
_DATE = re.compile(
    r"\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b(?:19|20)\d{2}\b|\b(?:january|february|march|april|june|july|august|"
    r"september|october|november|december)\b",
    re.IGNORECASE,
)
_SIDE_ASIDE = re.compile(r",\s*\b(?:on|to|at) the (?:right|left)(?: side)?\s*,\s*", re.IGNORECASE)  # ", on the left,"
# "on the right" at a clause end goes whole; in "of the right midbrain" only the side goes
_SIDE_PHRASE = re.compile(r",?\s*\b(?:on|to|of|at) the (?:right|left)(?: side)?(?=\s*(?:[,.;:)]|$))", re.IGNORECASE)
_SIDE = re.compile(r"\b(?:right|left|bilateral(?:ly)?)(?:[- ]sided|ward)?\b[ -]?", re.IGNORECASE)
_DANGLING = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "with",
        "and",
        "or",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "which",
        "that",
        "this",
        "these",
        "its",
        "their",
        "than",
        "into",
        "within",
        "without",
        "measures",
        "measuring",
    ]
)
# What is left of "This mass measures 2.9 cm." once the size goes: a subject alone states nothing.
_EMPTY = re.compile(r"^(?:(?:this|the|a|an|it)\s+)?(?:[\w-]+)?\s*(?:measures|measuring|is|are)?\s*\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class Cleaned:
    sentence: str | None  # None: the sentence goes
    reason: str | None  # what was changed or why it went; None when nothing was


def complete(sentence: str) -> bool:
    """A whole sentence: closing punctuation, no ellipsis, and a last word that can end one."""
    text = sentence.strip().rstrip("\"')]")
    if not text or text.endswith(("...", "…")) or text[-1] not in ".!?":
        return False
    words = re.findall(r"[\w-]+", text)
    return not words or (words[-1].lower() not in _DANGLING and not words[-1].endswith("-"))


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    text = re.sub(r"\b([Aa])n (?=[^aeiouAEIOU\W\d])", r"\1 ", text)
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)
    text = re.sub(r"^[,;:\s]+|(?<=[,;])\s*[,;]", "", text).replace("( )", "").replace("()", "")
    text = re.sub(r"\b([Aa]n?|[Tt]he)\s*,\s*", r"\1 ", text)  # "a 1.9 x 4.5cm, fat density mass" lost its size
    return text[:1].upper() + text[1:]


def clean_sentence(sentence: str) -> Cleaned:
    """One Findings sentence of an image-only draft, rid of another patient's details (module docstring)."""
    if not complete(sentence):
        return Cleaned(None, "cut off")
    if _AGE_SEX.search(sentence):
        return Cleaned(None, "states another patient's age or sex")
    if _DATE.search(sentence):
        return Cleaned(None, "states another patient's date")
    changed = []
    text = _MEASURING.sub("", sentence)
    text = _SIZE.sub("", text)
    if text != sentence:
        changed.append("another patient's measurement taken out")
    sided = _SIDE.sub("", _SIDE_PHRASE.sub("", _SIDE_ASIDE.sub(" ", text)))
    if sided != text:
        changed.append("another patient's side taken out")
    text = _tidy(sided)
    if _EMPTY.match(text.rstrip(".")) or len(re.findall(r"[a-z]{3,}", text.lower())) < 2:
        return Cleaned(None, "nothing left once another patient's details were taken out")
    if not complete(text):
        text = text.rstrip(" ,;:") + "."
    return Cleaned(text, "; ".join(changed) or None)


def similar_cases_impression(cases: Sequence[tuple[str, str]], limit: int = 3) -> str:
    """ "Similar prior cases: X (MPX1), Y (MPX2)." from (case id, diagnosis name) pairs, best first; a case
    without a diagnosis is named by its id alone."""
    shown = [f"{name} ({case_id})" if name else case_id for case_id, name in cases[:limit]]
    return f"Similar prior cases: {', '.join(shown)}." if shown else "No similar prior case."
