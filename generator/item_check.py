"""A report sentence checked against the notes item it writes out, and the plain sentence written when it fails.

The refiner rewrites each notes item as report prose. A sentence is kept only if it keeps every number with
its unit, every side, vertebral level and MR sequence, and the negation or hedge of its item, keeps the
item's words (an abbreviation may come back written out: "heterog" as "heterogeneous"), and adds no word
that the item, the study's header (modality, body region) or plain report phrasing ("There is", "is seen",
"measuring") does not give. So nothing is lost, nothing flipped and nothing invented: a new anatomy, finding,
side or number fails the check. A failed item is written by `write_item` instead: the item with its
shorthand expanded, as a sentence ("There is a right frontal mass measuring 3.2 x 2.8 cm.", "No midline
shift is seen.").

Words are compared by a crude stem (suffixes off, then one a prefix of the other, at least 4 letters), so
"pancreas" matches "pancreatic" and "dilated" matches "dilatation"; there is no model here to be wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from kgreport.generator.image_draft import complete
from kgreport.knowledge.extraction.notes_items import (
    NotesItem,
    certainty,
    levels_of,
    numbers_of,
    sequences_of,
    sides_of,
)

# Plain report phrasing a sentence may add to an item without stating anything new.
REPORT_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "within",
        "with",
        "at",
        "on",
        "to",
        "and",
        "or",
        "also",
        "which",
        "this",
        "these",
        "that",
        "its",
        "their",
        "there",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "seen",
        "noted",
        "identified",
        "demonstrated",
        "present",
        "evident",
        "visualized",
        "visualised",
        "observed",
        "appreciated",
        "shown",
        "shows",
        "show",
        "showing",
        "demonstrates",
        "demonstrating",
        "appears",
        "appear",
        "appearing",
        "measuring",
        "measures",
        "measure",
        "measured",
        "approximately",
        "about",
        "no",
        "not",
        "without",
        "possible",
        "possibly",
        "likely",
        "probable",
        "probably",
        "cannot",
        "excluded",
        "exclude",
        "suspicious",
        "concerning",
        "for",
        "finding",
        "findings",
        "as",
        "by",
        "from",
        "again",
        "further",
        "some",
        "there's",
        "is're",
        "has",
        "have",
        "it",
        "they",
        "s",
    ]
)
_NOT_CONTENT = frozenset({"right", "left", "bilateral", "bilaterally", "mm", "cm", "x"})  # checked on their own
_WORD = re.compile(r"[a-z][a-z0-9'/-]*")
_SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ities", "ity", "ies", "ed", "es", "ous", "ic",
             "al", "ly", "s", "e", "y")  # fmt: skip
_VERB = re.compile(
    r"\b(?:is|are|was|were|measures|measuring|shows|demonstrates|extends|extending|involves|involving|causes|"
    r"causing|seen|noted|abuts|compresses|displaces|contains|courses|arises|lies|enters|exits|protrudes|destroys|"
    r"erodes|encases|invades|crosses|surrounds|obstructs|narrows|replaces|expands|effaces)\b",
    re.IGNORECASE,
)
_TRAILING_NUMBER = re.compile(
    r"^(?P<head>.*?[a-z)])\s*,?\s+(?P<size>\d+(?:\.\d+)?(?:\s*x\s*\d+(?:\.\d+)?)*\s*(?:mm|cm))$"
)
LEADING_VERBS = frozenset(
    [
        "destroys",
        "erodes",
        "extends",
        "involves",
        "abuts",
        "encases",
        "compresses",
        "displaces",
        "crosses",
        "invades",
        "narrows",
        "obstructs",
        "surrounds",
        "contains",
        "causes",
        "replaces",
        "expands",
        "lies",
        "arises",
        "protrudes",
        "courses",
        "enters",
        "exits",
        "measures",
        "spans",
        "effaces",
        "appears",
        "appear",
        "seems",
        "demonstrates",
        "shows",
    ]
)
_LARGEST = re.compile(
    r"^(?P<head>[^,]+),\s*(?:the\s+)?largest\s+(?:measuring\s+)?(?P<size>[\d.]+(?:\s*x\s*[\d.]+)*\s*(?:mm|cm))$"
)
_LARGEST_FIRST = re.compile(
    r"^(?:the\s+)?largest\b(?P<where>.*?)\s*(?:measuring\s+|measures\s+)?(?P<size>(?:approximately\s+)?"
    r"[\d.]+(?:\s*x\s*[\d.]+)*\s*(?:mm|cm))$",
    re.IGNORECASE,
)
_PHRASE_ENDS = frozenset(
    [
        "with",
        "w/",
        "in",
        "of",
        "at",
        "on",
        "to",
        "from",
        "along",
        "within",
        "involving",
        "arising",
        "extending",
        "measuring",
        "causing",
        "containing",
        "throughout",
        "through",
        "into",
        "near",
        "around",
        "beneath",
        "across",
    ]
)
_JOINS = re.compile(r"\b(?:with|w/|of|in|on|at|to|from|and|or)\b", re.IGNORECASE)  # not a state's subject
_STATE = re.compile(
    r"^(?P<head>[a-z][\w /-]*?[a-z](?<!ly))(?P<adverb>\s+(?:otherwise|diffusely|mildly|markedly|moderately|"
    r"severely|slightly|focally|minimally|massively))?\s+(?P<state>normal|unremarkable|intact|patent|preserved|dilated|enlarged|"
    r"thickened|distended|displaced|effaced|collapsed|narrowed|widened|absent|atrophic|hyperdense|hypodense|"
    r"hyperlucent|prominent|shifted|compressed|opacified|expanded)(?P<rest>\s+.+)?$",
    re.IGNORECASE,
)
PLURAL_QUANTIFIERS = frozenset(
    [
        "several",
        "multiple",
        "numerous",
        "innumerable",
        "many",
        "few",
        "two",
        "three",
        "four",
        "five",
    ]
)
# Anatomy and findings that end in "s" and are one thing: "the dens is intact", "ascites is seen".
SINGULAR_S = frozenset(["dens", "pons", "lens", "os", "pes", "ascites", "pectus", "situs", "meatus", "corpus"])
# Heads that take "a"/"an": a mass, a nodule; "hydrocephalus" and "edema" do not.
COUNT_NOUNS = frozenset(
    [
        "mass",
        "nodule",
        "lesion",
        "cyst",
        "collection",
        "fracture",
        "focus",
        "aneurysm",
        "defect",
        "hematoma",
        "abscess",
        "tumor",
        "lump",
        "structure",
        "opacity",
        "density",
        "filling",
        "shunt",
        "catheter",
        "tube",
        "stent",
        "herniation",
        "protrusion",
        "bulge",
        "extrusion",
        "fistula",
        "malformation",
        "diverticulum",
        "polyp",
        "stone",
        "calculus",
        "thrombus",
        "clot",
        "effusion",
        "infarct",
        "fluid-level",
        "level",
        "shift",
        "deformity",
        "dissection",
        "stenosis",
        "occlusion",
        "enlargement",
    ]
)


def stem(word: str) -> str:
    word = word.lower().strip("'-/")
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def same_word(a: str, b: str) -> bool:
    sa, sb = stem(a), stem(b)
    if sa == sb:
        return True
    short, long = sorted((sa, sb), key=len)
    return len(short) >= 4 and long.startswith(short)


def content_words(text: str) -> list[str]:
    """Lower-case words that state something (report phrasing, numbers, sides and units left out)."""
    words = []
    for word in _WORD.findall(text.lower()):
        for part in re.split(r"[/-]", word):
            if part and part not in REPORT_WORDS and part not in _NOT_CONTENT:
                words.append(part)
    return words


def _covered(words: Iterable[str], by: Sequence[str]) -> list[str]:
    return [w for w in words if not any(same_word(w, b) for b in by)]


def _repeats(sentence: str, n: int = 4) -> bool:
    """A run of `n` words said twice: a refiner looping ("T2 hyperintense near insertion • T2 hyperintense ...")."""
    words = _WORD.findall(sentence.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


@dataclass(frozen=True)
class ItemCheck:
    ok: bool
    reasons: tuple[str, ...]


def check_sentence(sentence: str, item: NotesItem, header: str = "", modality: str | None = None) -> ItemCheck:
    """Whether `sentence` writes out `item` faithfully (see the module docstring), and if not, why."""
    reasons = []
    if not complete(sentence if sentence.rstrip()[-1:] in ".!?" else f"{sentence.rstrip()}."):
        reasons.append("cut off")
    if _repeats(sentence):
        reasons.append("repeats itself")
    numbers, own_numbers = set(numbers_of(sentence)), set(item.numbers)
    if lost := sorted(own_numbers - numbers):
        reasons.append(f"drops {', '.join(lost)}")
    if added := sorted(numbers - own_numbers):
        reasons.append(f"adds {', '.join(added)}")
    sides, own_sides = set(sides_of(sentence)), set(item.sides)
    if sides != own_sides:
        reasons.append(
            f"side {'/'.join(sorted(sides)) or 'none'} where the notes say {'/'.join(sorted(own_sides)) or 'none'}"
        )
    for name, found, own in (
        ("level", set(levels_of(sentence, modality)), set(item.levels)),
        ("sequence", set(sequences_of(sentence, modality)), set(item.sequences)),
    ):
        if found != own:
            reasons.append(
                f"{name} {', '.join(sorted(found)) or 'none'} where the notes say {', '.join(sorted(own)) or 'none'}"
            )
    status = certainty(sentence)
    if status != item.status:
        reasons.append(f"states it {status} where the notes say {item.status}")
    said = content_words(sentence)
    allowed = content_words(item.text) + content_words(item.typed) + content_words(header)
    if added_words := _covered(said, allowed):
        reasons.append(f"adds {' '.join(dict.fromkeys(added_words))!r}")
    if dropped := _covered(content_words(item.text), said):
        reasons.append(f"drops {' '.join(dict.fromkeys(dropped))!r}")
    return ItemCheck(not reasons, tuple(reasons))


def _first_phrase(words: list[str]) -> list[str]:
    """The words up to the first preposition: its last is the head noun ("mass arising from the fascia")."""
    return next((words[:i] for i, w in enumerate(words) if i and w.lower() in _PHRASE_ENDS), words)


def _article(phrase: str) -> str:
    words = phrase.split()
    if not words:
        return ""
    first = words[0].lower()
    head = re.sub(r"[^a-z-]", "", _first_phrase(words)[-1].lower())
    if first[0].isdigit() or head in COUNT_NOUNS:
        letter_name = words[0][:1].isupper() and (len(words[0]) == 1 or not words[0][1:2].islower())  # "L4-5", "MR"
        vowel = words[0][:1].upper() in "AEFHILMNORSX" if letter_name else first[0] in "aeio"
        return "an " if vowel or first in {"8", "11", "18", "80"} else "a "
    return ""


def _plural(phrase: str) -> bool:
    words = _first_phrase(phrase.split())
    head = re.sub(r"[^a-z]", "", words[-1].lower()) if words else ""
    if head in SINGULAR_S:
        return False
    if words and words[0].lower() in PLURAL_QUANTIFIERS:  # "several small foci ... temporal"
        return True
    return head.endswith(("s", "i", "ae")) and not head.endswith(("ss", "us", "is", "sis", "ous"))


def _lower_first(text: str) -> str:
    """ "Endometrial fluid" → "endometrial fluid" after "There is"; "MCA", "T2" and "L4-5" stay."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".;,:")
    return _capital(text) + "."


def write_item(item: NotesItem) -> str:
    """The item as a plain report sentence: shorthand expanded, its words, numbers, sides and hedge kept."""
    text = " ".join(item.text.replace(" - ", ", ").replace(" + ", " and ").split()).strip(" .;,")
    lowered = text.lower()
    if item.kind != "finding":  # the exam or the history, as typed (expanded): "History of VP shunt."
        return _sentence(re.sub(r"^history\s+(?!of\b)", "history of ", text, flags=re.IGNORECASE))
    first = lowered.split()[0] if lowered.split() else ""
    if first in LEADING_VERBS:  # "destroys T9 body": the finding of the item before it goes on
        return _sentence(f"It {text[:1].lower()}{text[1:]}")
    if item.status == "absent":
        if lowered.startswith("no "):
            body = text[3:]
            return _sentence(f"No {body} {'are' if _plural(body) and ' or ' not in body else 'is'} seen")
        if re.search(r"\bnot\b", lowered) and not re.search(r"\b(?:is|are|was|were)\s+not\b", lowered):
            head, _, tail = text.partition(" not ")
            return _sentence(f"The {head} {'are' if _plural(head) else 'is'} not {tail}") if tail else _sentence(text)
        return _sentence(text)
    if item.status == "uncertain":
        if lowered.startswith("possible "):
            return _sentence(f"There is possible {text[9:]}")
        return _sentence(text)
    if largest := _LARGEST_FIRST.match(text):  # "largest proximal metaphyseal approx 5.2 cm"
        where, size = largest.group("where").strip(" ,"), largest.group("size")
        return _sentence(f"The largest{f', {where},' if where else ''} measures {size}")
    if largest := _LARGEST.match(text):  # "multiple liver lesions, largest 3 cm"
        head, size = largest.group("head"), largest.group("size")
        return _sentence(f"There {'are' if _plural(head) else 'is'} {head}, the largest measuring {size}")
    if item.sequences and (lowered.startswith(tuple(q.lower() for q in item.sequences)) or first.endswith("ly")):
        return _sentence(text)  # "T1 low signal in ...", "slightly T1 hypointense": as typed
    head, comma, rest = text.partition(",")
    if comma and rest.strip() and item.status == "present" and not _VERB.search(head) and ":" not in text:
        # "multiple bilateral renal masses, many with macroscopic fat": the head by rule, the rest as typed
        lead = write_item(replace(item, text=head.strip()))
        if lead.lower().startswith(("there ", "the ")):
            return f"{lead[:-1]},{rest.rstrip(' .;,')}."
    if _VERB.search(text) or "," in text or ":" in text or first in {"normal", "unremarkable"}:
        return _sentence(text)
    state = _STATE.match(text)
    subject = state.group("head").split() if state else []
    if state and len(subject) <= 4 and not _JOINS.search(state.group("head")) and subject[0] not in PLURAL_QUANTIFIERS:
        # "left ventricle dilated", "coronaries normal", "liver diffusely enlarged", "prostate enlarged with ..."
        head, adverb, rest = state.group("head"), state.group("adverb") or "", state.group("rest") or ""
        verb = "are" if _plural(head) else "is"
        return _sentence(f"The {head[:1].lower()}{head[1:]} {verb}{adverb} {state.group('state')}{rest}")
    side = re.search(r"\s+(right|left|bilateral)$", text, re.IGNORECASE)
    if side:  # "lesions bilateral" → "lesions bilaterally"; "nodule right" → "nodule on the right"
        text = text[: side.start()]
        where = "bilaterally" if side.group(1).lower() == "bilateral" else f"on the {side.group(1).lower()}"
        return write_item(replace(item, text=text))[:-1] + f" {where}."
    text = _lower_first(text)
    if match := _TRAILING_NUMBER.match(text):
        head, size = match.group("head"), match.group("size")
        if head.endswith(" approximately"):  # "lesion approx 5 cm" → "measuring approximately 5 cm"
            head, size = head.removesuffix(" approximately"), f"approximately {size}"
        return _sentence(
            f"There {'are' if _plural(head) else 'is'} {'' if _plural(head) else _article(head)}{head} measuring {size}"
        )
    if _plural(text):
        return _sentence(f"There are {text}")
    return _sentence(f"There is {_article(text)}{text}")
