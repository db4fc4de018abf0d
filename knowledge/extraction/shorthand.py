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

# fmt: off
_TABLE = {
    # lungs, abdomen quadrants, limbs
    "RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe", "LUL": "left upper lobe",
    "LLL": "left lower lobe", "ling": "lingula", "RUQ": "right upper quadrant", "RLQ": "right lower quadrant",
    "LUQ": "left upper quadrant", "LLQ": "left lower quadrant", "RUE": "right upper extremity",
    "LUE": "left upper extremity", "RLE": "right lower extremity", "LLE": "left lower extremity",
    # chest
    "LAD": "lymphadenopathy", "PTX": "pneumothorax", "HTX": "hemothorax", "PE": "pulmonary embolism",
    "GGO": "ground-glass opacity", "GGOs": "ground-glass opacities", "GGN": "ground-glass nodule",
    "CHF": "congestive heart failure", "COPD": "chronic obstructive pulmonary disease",
    "ILD": "interstitial lung disease", "PNA": "pneumonia", "ARDS": "acute respiratory distress syndrome",
    "TB": "tuberculosis", "NSCLC": "non-small cell lung cancer", "SCLC": "small cell lung cancer",
    "CAD": "coronary artery disease", "MI": "myocardial infarction", "LVH": "left ventricular hypertrophy",
    "PFO": "patent foramen ovale", "ASD": "atrial septal defect", "VSD": "ventricular septal defect",
    "PDA": "patent ductus arteriosus", "LV": "left ventricle", "RV": "right ventricle", "HTN": "hypertension",
    # neuro
    "ICH": "intracranial hemorrhage", "SAH": "subarachnoid hemorrhage", "SDH": "subdural hematoma",
    "EDH": "epidural hematoma", "IVH": "intraventricular hemorrhage", "IPH": "intraparenchymal hemorrhage",
    "CVA": "cerebrovascular accident", "TIA": "transient ischemic attack", "MS": "multiple sclerosis",
    "TBI": "traumatic brain injury", "NPH": "normal pressure hydrocephalus", "AVM": "arteriovenous malformation",
    "MCA": "middle cerebral artery", "ACA": "anterior cerebral artery", "PCA": "posterior cerebral artery",
    "ICA": "internal carotid artery", "CCA": "common carotid artery", "CSF": "cerebrospinal fluid",
    "IAC": "internal auditory canal", "CPA": "cerebellopontine angle", "WM": "white matter",
    # abdomen, pelvis
    "IVC": "inferior vena cava", "SVC": "superior vena cava", "CBD": "common bile duct", "GB": "gallbladder",
    "SMA": "superior mesenteric artery", "SMV": "superior mesenteric vein", "IMA": "inferior mesenteric artery",
    "UPJ": "ureteropelvic junction", "UVJ": "ureterovesical junction", "AAA": "abdominal aortic aneurysm",
    "SBO": "small bowel obstruction", "LBO": "large bowel obstruction", "HCC": "hepatocellular carcinoma",
    "RCC": "renal cell carcinoma", "DVT": "deep vein thrombosis", "ao": "aorta", "abd": "abdomen",
    "pelv": "pelvis", "panc": "pancreas",
    # musculoskeletal
    "AVN": "avascular necrosis", "DDD": "degenerative disc disease", "DJD": "degenerative joint disease",
    "OA": "osteoarthritis", "ACL": "anterior cruciate ligament", "PCL": "posterior cruciate ligament",
    "MCL": "medial collateral ligament", "LCL": "lateral collateral ligament", "TMJ": "temporomandibular joint",
    "fx": "fracture", "fxs": "fractures",
    # devices
    "ETT": "endotracheal tube", "NGT": "nasogastric tube", "PICC": "peripherally inserted central catheter",
    "CVC": "central venous catheter",
    # lymph nodes, metastases
    "LN": "lymph node", "LNs": "lymph nodes", "mets": "metastases",
    # position, laterality
    "R": "right", "L": "left", "rt": "right", "lt": "left", "b/l": "bilateral", "bilat": "bilateral",
    "ant": "anterior", "post": "posterior", "sup": "superior", "inf": "inferior", "lat": "lateral",
    "med": "medial", "prox": "proximal", "dist": "distal", "AP": "anteroposterior",
    # report words
    "hx": "history", "dx": "diagnosis", "ddx": "differential diagnosis", "tx": "treatment", "bx": "biopsy",
    "sx": "symptoms", "s/p": "status post", "w/": "with", "w/o": "without", "c/w": "consistent with",
    "r/o": "rule out", "c/f": "concerning for", "f/u": "follow-up", "nml": "normal", "WNL": "within normal limits",
    "neg": "negative", "-ve": "negative", "+ve": "positive", "approx": "approximately", "mult": "multiple",
    "assoc": "associated", "mod": "moderate", "sev": "severe", "incr": "increased", "decr": "decreased",
}
# fmt: on
ABBREVIATIONS: Mapping[str, str] = MappingProxyType(_TABLE)
"""Abbreviation → expansion, about a hundred that matter in CT/MR reports."""

_AS_WRITTEN = {"LAD", "CAD", "RUE", "TIA", "PDA"}  # also English words or names when lower-cased
_NOT_BEFORE = {  # "post contrast", "post-op" are not "posterior"
    "post": r"(?!\s*(?:op|operative|surgical|contrast|treatment|radiation|therapy|traumatic|procedur|partum|ictal))",
}
_NOT_AFTER_NUMBER = {"R", "L"}  # "2 L" is litres
_BEFORE = r"(?<![\w-])"
_AFTER = r"(?![\w-])"


def _case_sensitive(key: str) -> bool:
    letters = [c for c in key if c.isalpha()]
    upper = all(c.isupper() for c in letters)
    lower = all(c.islower() for c in letters)
    return not lower and (not upper or len(letters) <= 2 or key in _AS_WRITTEN)


def _alternative(key: str, text: str) -> str:
    body = re.escape(text) if _case_sensitive(key) else f"(?i:{re.escape(text)})"
    before = _BEFORE + (r"(?<!\d\s)" if key in _NOT_AFTER_NUMBER else "")
    after = "" if text.endswith("/") else _AFTER  # "w/contrast"
    return before + body + after + _NOT_BEFORE.get(key, "")


def _pattern(pairs: list[tuple[str, str]]) -> re.Pattern[str]:
    """Longest first, so that "w/o" wins over "w/" and "right upper lobe" over "right"."""
    ordered = sorted(pairs, key=lambda p: (-len(p[1]), p[1]))
    return re.compile("|".join(f"(?:{_alternative(key, text)})" for key, text in ordered))


_EXPAND = _pattern([(key, key) for key in ABBREVIATIONS])
_EXACT = {key: value for key, value in ABBREVIATIONS.items() if _case_sensitive(key)}
_ANY_CASE = {key.lower(): (key, value) for key, value in ABBREVIATIONS.items() if not _case_sensitive(key)}
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


def _expansion(match: re.Match[str]) -> str:
    found = match.group(0)
    if found in _EXACT:
        expansion = _EXACT[found]
    else:
        key, expansion = _ANY_CASE[found.lower()]
        if key.islower() and found[:1].isupper():  # "Hx" → "History"; "RUL", "Ptx" → lower-case
            expansion = expansion[:1].upper() + expansion[1:]
    following = match.string[match.end() : match.end() + 1]
    return expansion + " " if found.endswith("/") and following.isalnum() else expansion  # "w/contrast"


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


def expand_shorthand(text: str) -> str:
    """Notes with their shorthand written out: abbreviations, "2cm" → "2 cm", "3x4cm" → "3 x 4 cm",
    "?X" / "X?" → "possible X". Everything else (punctuation, negations, word order) is kept."""
    text = _hedge_items(text)
    text = _QUESTION_BEFORE.sub("possible ", text)
    text = _TIMES.sub(" x ", text)
    text = _UNITS.sub(" ", text)
    return _EXPAND.sub(_expansion, text)


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
