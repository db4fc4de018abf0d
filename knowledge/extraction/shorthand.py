"""Radiology shorthand: the abbreviations a radiologist types in notes, expanded to the words the finding
extractor knows ("RUL 2cm spiculated nodule, no effusion, mediastinal LAD" → "right upper lobe 2 cm
spiculated nodule, no effusion, mediastinal lymphadenopathy"), and the inverse (for simulating notes).

Abbreviations match whole tokens only: never inside a word ("pe" of "pelvis", "PE" of "PEDAL") nor
next to a hyphen ("L-spine"). Upper-case acronyms of one or two letters ("PE", "MS", "R", "L") and a few
that are also words ("LAD", "CAD", "RUE") match only as written ("ms" stays milliseconds); lower-case
keys ("hx", "rt") and other acronyms ("RUL", "ptx") match in any case. Negations ("no X") and
laterality are kept; "?X" and "X?" become "possible X", "-ve"/"neg" "negative", "2cm" "2 cm".

In notes a comma usually ends an item, where in prose it continues a list: "no effusion, mediastinal
LAD" does not deny the lymphadenopathy. `as_sentences` makes each item its own sentence so that a
negation or a hedge reaches no further than its item (a negated list joined by "or"/"and", "no effusion,
consolidation or PTX", stays one sentence).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from types import MappingProxyType

from kgreport.knowledge.extraction.abbreviations import load_lexicon

_LEXICON = load_lexicon()
ABBREVIATIONS: Mapping[str, str] = MappingProxyType(_LEXICON.primary(source="kgreport"))
"""Our own abbreviation → expansion (its one or default sense), from `data/shorthand.tsv`; the full lexicon, with the
synonyms table's acronyms and the abbreviations of several senses, is `knowledge.extraction.abbreviations`."""

_NOT_BEFORE = {  # "post contrast", "post-op" are not "posterior"
    "post": r"(?!\s*(?:op|operative|surgical|contrast|gad|gd\b|gadolinium|treatment|radiation|therapy|traumatic|"
    r"procedur|partum|ictal))",
}
_NOT_AFTER_NUMBER = {"R", "L"}  # "2 L" is litres
_BEFORE = r"(?<![\w-])"
_AFTER = r"(?![\w-])"


def _case_sensitive(key: str) -> bool:
    return _LEXICON.entries[key].case_sensitive


def _alternative(key: str, text: str) -> str:
    body = re.escape(text) if _case_sensitive(key) else f"(?i:{re.escape(text)})"
    before = _BEFORE + (r"(?<!\d\s)" if key in _NOT_AFTER_NUMBER else "")
    after = "" if text.endswith("/") else _AFTER  # "w/contrast"
    return before + body + after + _NOT_BEFORE.get(key, "")


def _pattern(pairs: list[tuple[str, str]]) -> re.Pattern[str]:
    """Longest first, so that "w/o" wins over "w/" and "right upper lobe" over "right"."""
    ordered = sorted(pairs, key=lambda p: (-len(p[1]), p[1]))
    return re.compile("|".join(f"(?:{_alternative(key, text)})" for key, text in ordered))


# "celiac a.", "renal v", "optic n": a one-letter abbreviation is read only right after one of its cue words.
_AFTER_CUE = [
    (re.compile(rf"\b((?:{'|'.join(map(re.escape, entry.senses[0].cues))})\w*)\s+{re.escape(key[:-1])}\.?(?![\w-])",
                re.IGNORECASE), entry.senses[0].expansion)
    for key, entry in _LEXICON.entries.items()
    if len(key) == 2 and key.endswith(".") and len(entry.senses) == 1 and entry.senses[0].cues
]  # fmt: skip
_EXPAND = _pattern([(key, key) for key in _LEXICON.entries if not (len(key) == 2 and key.endswith("."))])
_EXACT = {key: entry for key, entry in _LEXICON.entries.items() if entry.case_sensitive}
_ANY_CASE = {key.lower(): entry for key, entry in _LEXICON.entries.items() if not entry.case_sensitive}
_INVERSE: dict[str, list[str]] = {}
for _key, _value in ABBREVIATIONS.items():
    _INVERSE.setdefault(_value.lower(), []).append(_key)
_ABBREVIATE = re.compile(
    "|".join(f"{_BEFORE}(?i:{re.escape(text)}){_AFTER}" for text in sorted(_INVERSE, key=lambda t: (-len(t), t)))
)
_UNITS = re.compile(r"(?<=\d)(?=(?:mm|cm|ml|mL|cc|HU)(?![A-Za-z]))")
_TIMES = re.compile(r"(?<=\d)\s*[x×]\s*(?=\d)")
_QUESTION_BEFORE = re.compile(r"(?<![\w?])\?\s*(?=[A-Za-z])")
_ITEM_PARTS = re.compile(r"([,;\n]|\.\s)")  # what ends an item "X?" hedges
_ITEM = re.compile(r"[,;\n]")
_CUES = ("no ", "not ", "without ", "negative ", "possible ", "probable ", "rule out ", "?")
_LIST_JOINS = ("or ", "nor ", "and ")
MAX_LIST_ITEMS = 6  # a negated list in notes is short: "no effusion, consolidation or PTX"


def _hedge_items(text: str) -> str:
    """An item ending in "?" becomes "possible ..." ("RLL PNA?"); "no X?" is left as typed."""
    parts = _ITEM_PARTS.split(text)
    for i in range(0, len(parts), 2):  # items at even indexes, their separators between
        item = parts[i]
        body = item.rstrip()
        if not body.endswith("?") or len(body) < 2 or body[-2] == "?":
            continue
        words = body[:-1].rstrip()
        start = len(words) - len(words.lstrip())
        if not any(c.isalpha() for c in words) or words[start:].lower().startswith(("no ", "possible ")):
            continue
        parts[i] = f"{words[:start]}possible {words[start:]}{item[len(body) :]}"
    return "".join(parts)


def expand_shorthand(text: str, modality: str | None = None, context: str | None = None) -> str:
    """Notes with their shorthand written out: abbreviations, "2cm" → "2 cm", "3x4cm" → "3 x 4 cm",
    "?X" / "X?" → "possible X". Everything else (punctuation, negations, word order) is kept. An abbreviation
    of several senses is read from its own item's words, then from `context` (the whole notes, where `text`
    is one item of them: "no hydro" under "NCCT head") or `text`, and the study's `modality` ("CT", "MR"),
    and left as typed when they do not settle it."""
    text = _hedge_items(text)
    text = _QUESTION_BEFORE.sub("possible ", text)
    text = _TIMES.sub(" x ", text)
    text = _UNITS.sub(" ", text)
    for pattern, expansion in _AFTER_CUE:
        text = pattern.sub(rf"\1 {expansion}", text)
    parts = _ITEM_PARTS.split(text)  # items at even indexes, their separators between
    notes = text if context is None else f"{text} {context}"
    return "".join(part if i % 2 else _expand_item(part, notes, modality) for i, part in enumerate(parts))


def _expand_item(item: str, notes: str, modality: str | None) -> str:
    """One item's abbreviations written out: an abbreviation of several senses is settled by its own item
    first, then by its default sense, or where it has none by the whole notes."""

    def expand(match: re.Match[str]) -> str:
        found = match.group(0)
        entry = _EXACT[found] if found in _EXACT else _ANY_CASE[found.lower()]
        # the notes settle only an abbreviation without a default: "peripheral enh" is "enhancement" even in
        # notes that name a mass elsewhere
        has_default = any(sense.default for sense in entry.senses)
        expansion = entry.resolve(item, modality, use_default=False) or entry.resolve(
            item if has_default else notes, modality
        )
        if expansion is None:  # an ambiguous abbreviation neither its item nor the notes settle stays as typed
            return found
        if entry.key.islower() and found[:1].isupper():  # "Hx" → "History"; "RUL", "Ptx" → lower-case
            expansion = expansion[:1].upper() + expansion[1:]
        following = match.string[match.end() : match.end() + 1]
        return expansion + " " if found.endswith("/") and following.isalnum() else expansion  # "w/contrast"

    return _EXPAND.sub(expand, item)


def abbreviate(text: str, rng: random.Random, rate: float = 0.7) -> str:
    """The inverse of `expand_shorthand`: each expansion found in the text ("right upper lobe",
    "pneumothorax") is replaced, with probability `rate`, by one of its abbreviations ("RUL", "PTX").
    Deterministic given `rng`: one draw per expansion found, a second where it has several abbreviations."""

    def shorten(match: re.Match[str]) -> str:
        found = match.group(0)
        if rng.random() >= rate:
            return found
        options = sorted(_INVERSE[found.lower()])
        key = options[0] if len(options) == 1 else rng.choice(options)
        return key[:1].upper() + key[1:] if found[:1].isupper() and key.islower() else key

    return _ABBREVIATE.sub(shorten, text)


def as_sentences(text: str) -> str:
    """Each item of (expanded) notes as its own sentence, items being what commas, semicolons and line
    breaks separate: "no effusion, mediastinal lymphadenopathy" → "no effusion. mediastinal
    lymphadenopathy." A negated or hedged item followed by items that end in "or"/"and" ("no effusion,
    consolidation or pneumothorax") is a list and stays one sentence."""
    items = [item.strip() for item in _ITEM.split(text)]
    items = [item for item in items if item]
    sentences: list[str] = []
    i = 0
    while i < len(items):
        end = i + 1
        if items[i].lower().startswith(_CUES):
            for j in range(i + 1, min(len(items), i + MAX_LIST_ITEMS)):
                later = items[j].lower()
                if later.startswith(_CUES):
                    break
                if later.startswith(_LIST_JOINS) or " or " in f" {later} " or " nor " in f" {later} ":
                    end = j + 1
                    break
        sentence = ", ".join(items[i:end])  # not capitalised: spaCy reads "Mass." as Massachusetts
        sentences.append(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
        i = end
    return " ".join(sentences)
