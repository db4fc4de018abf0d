"""Notes as items: what a radiologist types, split into findings, each with what must survive into the report.

"R frontal mass 3.2 x 2.8cm, heterog enh; no MLS\\nT2 hyperint edema ?" is three items:
- "right frontal mass 3.2 x 2.8 cm, heterogeneous enhancement" (present; side right; numbers 3.2 x 2.8 cm),
- "no midline shift" (absent),
- "T2 hyperintense edema" (uncertain; sequence T2).
Items end at line breaks, ";", ". " and at commas that separate findings. A comma followed only by a
measurement or a description of the same finding ("3.2 cm", "measuring 4 mm", "with rim enhancement") does
not end an item, and a negated list ("no effusion, consolidation or PTX") is one item. Each item keeps its
numbers with units, sides, vertebral levels (T12, L4-5, C1-2), MR sequences (T1, T2, STIR, FLAIR, DWI, ADC)
and certainty: absent ("no", "without", "negative for"), uncertain ("?", "possible", "likely", "cannot
exclude", "concerning for"), else present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kgreport.knowledge.extraction.shorthand import expand_shorthand

NEGATION = re.compile(
    r"^(?:no|not|without|negative for|neg for|free of|absent|absence of|nor)\b|\b(?:is|are|was|were)\s+not\b"
    r"|\bnot\s+[a-z]+|\b(?:absent|negative)$",
    re.IGNORECASE,
)
UNCERTAINTY = re.compile(
    r"\?|\b(?:possible|possibly|poss|probable|probably|likely|questionable|suspicious for|suspected|"
    r"concerning for|cannot exclude|cannot be excluded|can't exclude|not excluded|may represent|may be|"
    r"versus|vs|r/o|rule out|differential|ddx|suggestive of|suggests?|favou?r(?:ed|s)?)\b",
    re.IGNORECASE,
)
SIDE_WORDS = {
    "right": "right",
    "left": "left",
    "bilateral": "bilateral",
    "bilaterally": "bilateral",
    "both": "bilateral",
}
_SIDE = re.compile(r"\b(right|left|bilateral|bilaterally)\b", re.IGNORECASE)
_NUMBER = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?:\s*(?:x|×|by)\s*\d+(?:\.\d+)?)*(?:\s*(?:mm|cm|ml|mL|cc|HU|%|mmHg|mm Hg|degrees|"
    r"years?|weeks?|days?|months?|kg|g|L)\b)?"
)
_LEVEL = re.compile(r"\b([CTLS])(\d{1,2})(?:\s*[-–/]\s*([CTLS]?)(\d{1,2}))?\b")
_SEQUENCE = re.compile(
    r"\b(T1|T2|STIR|FLAIR|DWI|ADC|SWI|GRE|PD|T2\*|post[- ]?contrast|pre[- ]?contrast|diffusion|"
    r"proton density|gradient echo)\b",
    re.IGNORECASE,
)
# "T2" is a sequence before these words (or with an MR item's signal words), a vertebral level otherwise.
_SIGNAL = re.compile(
    r"\b(?:weighted|w|wi|hyper\w*|hypo\w*|iso\w*|signal|bright|dark|intense|intensity|shine|flair|stir|images?|"
    r"sequence|fat|sat|post|pre|enhanc\w*|restrict\w*)\b",
    re.IGNORECASE,
)
_CONTINUES = re.compile(
    r"^(?:measuring|measures|approx\w*|up to|with|w/|and|which|extending|involving|abutting|causing|"
    r"containing|compressing|displacing|at|in|into|onto|of|from|to|along|through|thru|across|beneath|near|"
    r"around|separate|(?:the\s+)?largest|biggest|dominant|many|most|some|several|few|one|two|all|\w+\s+to|"
    r"encasing|invading|eroding|obstructing|narrowing|effacing|"
    # a place that goes on from the one before: "b/l posterior temporal, parietal and occipital lobes"
    r"both|(?:frontal|parietal|temporal|occipital|medial|lateral|anterior|posterior|superior|inferior|upper|"
    r"lower|proximal|distal)\s+(?:and|or|&)\b|"
    # a description of the finding before: "RUL mass, approx 4cm, lobulated w/ spiculated margins"
    r"lobulated|spiculated|circumscribed|well[- ]\w+|ill[- ]\w+|heterog\w*|homog\w*|irregular|smooth|exophytic)\b",
    re.IGNORECASE,
)
_TIMING = re.compile(r"^(?:\d+\s*)?(?:hours?|hrs?|days?|weeks?|wks?|months?|years?|yrs?)\s+(?:after|post|since)\b")
_ONLY_NUMBERS = re.compile(r"^[\d.\sx×cmlHU%-]*$")
_BREAKS = re.compile(r"\n|;|(?<=[A-Za-z0-9)\]])(?<!\b[A-Za-z])\.\s+(?=\S)")  # not after "a." (artery)
_LIST_JOINS = ("or ", "nor ", "and ")
MAX_LIST_ITEMS = 6
# Words of an exam's name: an item made only of these describes the study, not a finding.
TECHNIQUE_WORDS = frozenset(
    [
        "ct",
        "cta",
        "ncct",
        "cect",
        "nect",
        "mr",
        "mri",
        "mra",
        "mrv",
        "pet",
        "us",
        "ultrasound",
        "xr",
        "radiograph",
        "scan",
        "study",
        "exam",
        "examination",
        "images",
        "image",
        "series",
        "view",
        "views",
        "3ch",
        "4ch",
        "2ch",
        "sax",
        "lax",
        "axial",
        "ax",
        "coronal",
        "cor",
        "sagittal",
        "sag",
        "oblique",
        "plane",
        "reformat",
        "reformats",
        "mip",
        "t1",
        "t2",
        "stir",
        "flair",
        "dwi",
        "adc",
        "swi",
        "gre",
        "fs",
        "fat",
        "sat",
        "saturated",
        "suppressed",
        "weighted",
        "w",
        "wi",
        "post",
        "pre",
        "contrast",
        "iv",
        "oral",
        "non",
        "noncontrast",
        "enhanced",
        "unenhanced",
        "with",
        "without",
        "and",
        "of",
        "the",
        "a",
        "phase",
        "arterial",
        "venous",
        "portal",
        "delayed",
        "window",
        "windows",
        "stroke",
        "bone",
        "lung",
        "soft",
        "tissue",
        "protocol",
        "angiogram",
        "angiography",
        "cardiac",
        "head",
        "brain",
        "neck",
        "chest",
        "abdomen",
        "nc",
        "scout",
        "abd",
        "pelvis",
        "pelvic",
        "spine",
        "cervical",
        "thoracic",
        "lumbar",
        "sacral",
        "c",
        "t",
        "l",
        "s",
        "orbit",
        "orbits",
        "face",
        "facial",
        "sinus",
        "sinuses",
        "temporal",
        "skull",
        "extremity",
        "knee",
        "ankle",
        "foot",
        "hand",
        "wrist",
        "elbow",
        "shoulder",
        "hip",
        "thigh",
        "leg",
        "arm",
        "right",
        "left",
        "bilateral",
        "hrs",
        "hours",
        "after",
        "presentation",
        "day",
        "days",
        "initial",
        "followup",
        "follow",
        "up",
        "repeat",
        "computed",
        "tomography",
        "magnetic",
        "resonance",
        "imaging",
    ]
)


@dataclass(frozen=True)
class NotesItem:
    """One finding of the notes: as typed, shorthand expanded, and the parts a report must keep."""

    index: int
    typed: str
    text: str  # shorthand expanded ("right frontal mass 3.2 x 2.8 cm")
    status: str  # present | absent | uncertain
    sides: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()  # "3.2 x 2.8 cm", "4 mm", "2"
    levels: tuple[str, ...] = ()  # "L4-5", "T12", "C1"
    sequences: tuple[str, ...] = ()  # "T2", "STIR"
    kind: str = "finding"  # finding | technique (the exam: "NCCT head", "ax T2 FS") | history ("hx VP shunt")


def certainty(text: str) -> str:
    """absent, uncertain or present, by the cues of one item (a hedged negation, "no X?", is uncertain)."""
    stripped = re.sub(r"\([^)]*\)", " ", text).strip()  # "replaces (not displaces) cord": an aside
    if UNCERTAINTY.search(stripped):
        return "uncertain"
    if NEGATION.search(stripped):
        return "absent"
    return "present"


def sides_of(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(SIDE_WORDS[m.lower()] for m in _SIDE.findall(text)))


def numbers_of(text: str) -> tuple[str, ...]:
    """Numbers with their units, normalised ("3.2x2.8cm" → "3.2 x 2.8 cm"); levels and sequences are not numbers."""
    masked = _LEVEL.sub(" ", _SEQUENCE.sub(" ", text))
    out = []
    for match in _NUMBER.finditer(masked):
        value = re.sub(r"\s*(?:x|×|by)\s*", " x ", match.group(0).strip())
        value = re.sub(r"(?<=\d)(?=[a-zA-Z%])", " ", value)
        out.append(" ".join(value.split()))
    return tuple(dict.fromkeys(out))


def _is_sequence(match: re.Match[str], text: str, modality: str | None) -> bool:
    letter, number = match.group(1).upper(), match.group(2)
    if letter != "T" or number not in {"1", "2"} or match.group(3) or match.group(4):
        return False
    after = text[match.end() : match.end() + 30]
    before = text[max(0, match.start() - 12) : match.start()]
    return bool(_SIGNAL.match(after.strip(" -/")) or re.search(r"\bon\s*$", before) or (modality == "MR"))


def levels_of(text: str, modality: str | None = None) -> tuple[str, ...]:
    """Vertebral levels ("L4-5", "T12-L1", "C1"), not the T1 / T2 of MR sequences."""
    out = []
    for match in _LEVEL.finditer(text):
        if _is_sequence(match, text, modality):
            continue
        start = match.group(1).upper() + match.group(2)
        end = (match.group(3).upper() + match.group(4)) if match.group(4) else ""
        out.append(f"{start}-{end}" if end else start)
    return tuple(dict.fromkeys(out))


def sequences_of(text: str, modality: str | None = None) -> tuple[str, ...]:
    out = []
    for match in _SEQUENCE.finditer(text):
        word = match.group(1)
        if word.upper() in {"T1", "T2"}:
            level = _LEVEL.match(text, match.start())
            if level and not _is_sequence(level, text, modality):
                continue
        out.append(word.upper() if len(word) <= 5 else word.lower())
    return tuple(dict.fromkeys(out))


def item_kind(text: str) -> str:
    """technique for an item that only names the exam (modality, sequence, plane, window, contrast, region),
    history for one that starts with the history ("history", "status post", "known"), else finding."""
    lowered = text.lower().strip()
    if lowered.startswith(("history", "status post", "known ", "prior ", "clinical", "indication", "presenting")):
        return "history"
    if _TIMING.match(lowered):  # "hrs after presentation", "2 days post op"
        return "history"
    words = re.findall(r"[a-z0-9]+", lowered)
    if words and all(w in TECHNIQUE_WORDS or w.isdigit() for w in words):
        return "technique"
    # "CTA chest, PE protocol": the exam and what it was protocolled for, not a finding
    return "technique" if words and words[0] in TECHNIQUE_WORDS and "protocol" in words else "finding"


def _commas(chunk: str) -> list[str]:
    """Split at commas outside parentheses: "(SAX, end-diastole)" stays whole."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(chunk):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if char == "," and depth <= 0:
            parts.append(chunk[start:i])
            start = i + 1
    parts.append(chunk[start:])
    return [p.strip() for p in parts]


def _continues(part: str, previous: str) -> bool:
    """A comma piece that describes the previous item's finding: a measurement or level alone, a short
    description ("lobulated", "heterog enh") after a finding stated present, or a phrase that goes on
    ("measuring 4 mm", "with rim enhancement")."""
    if _ONLY_NUMBERS.match(part) or _CONTINUES.match(part) or _LEVEL.fullmatch(part.strip()):
        return True
    short = len(part.split()) <= 2 and not NEGATION.search(part) and not UNCERTAINTY.search(part)
    return short and certainty(previous) == "present" and not _LEVEL.search(part)


def _header_split(chunk: str) -> list[str]:
    """ "CT neck w/ contrast: left ICA courses medially", "NC CT abd - multiple liver masses" → the exam,
    then the finding."""
    for mark in (":", " - "):
        head, found, rest = chunk.partition(mark)
        if found and rest.strip() and item_kind(expand_shorthand(head)) == "technique":
            return [head, rest]
    return [chunk]


def _pieces(notes: str) -> list[str]:
    """Raw items: line breaks, ";" and sentence ends split; commas split unless what follows continues."""
    out: list[str] = []
    for chunk in (part for piece in _BREAKS.split(notes) for part in _header_split(piece)):
        parts = _commas(chunk)
        merged: list[str] = []
        for part in parts:
            if not part:
                continue
            if merged and _continues(part, merged[-1]):
                merged[-1] = f"{merged[-1]}, {part}"
            else:
                merged.append(part)
        out += _join_negated_lists(merged)
    return [p.strip(" .-") for p in out if p.strip(" .-")]


def _join_negated_lists(parts: list[str]) -> list[str]:
    """ "no effusion, consolidation or PTX" is one negated item."""
    out, i = [], 0
    while i < len(parts):
        end = i + 1
        if NEGATION.match(parts[i]):
            for j in range(i + 1, min(len(parts), i + MAX_LIST_ITEMS)):
                later = parts[j].lower()
                if NEGATION.match(later) or UNCERTAINTY.search(later):
                    break
                if later.startswith(_LIST_JOINS) or " or " in f" {later} " or " nor " in f" {later} ":
                    end = j + 1
                    break
        out.append(", ".join(parts[i:end]))
        i = end
    return out


def split_items(notes: str, modality: str | None = None) -> list[NotesItem]:
    """The notes' items in the order typed (see the module docstring); [] for notes with no words."""
    items: list[NotesItem] = []
    for typed in _pieces(notes):
        if not any(c.isalnum() for c in typed):
            continue
        text = " ".join(expand_shorthand(typed, modality, context=notes).split())
        items.append(
            NotesItem(
                index=len(items),
                typed=typed,
                text=text,
                status=certainty(text),
                sides=sides_of(text),
                numbers=numbers_of(text),
                levels=levels_of(text, modality),
                sequences=sequences_of(text, modality),
                kind=item_kind(text),
            )
        )
    return items
