"""Which diagnoses an imaging finding suggests: radiology-semantic-dict's tables, read and checked.

radiology-semantic-dict (PyPI, MIT) ships three tables that link what is seen to what it may be:
- `imaging_findings.json`: about 8,300 rows, one finding of one pathology ("Apple-core constricting lesion" →
  "Colorectal Cancer (CRC)"), with its modality, whether it is pathognomonic and its ACR topic;
- `differential_groups.json`: about 360 presentations with their differential ("Bright on T2", MR, msk →
  intramuscular myxoma, myxoid liposarcoma, ...);
- `imaging_signs.json`: about 70 named signs with their differential ("Air Bronchogram" → pneumonia, ...).

They are read into plain records, one `Suggestion` per (finding, diagnosis, source). What the tables get wrong
for our use is dropped and counted, never silently kept: a row without a finding or a diagnosis, a row that is
not an imaging finding at all (no modality: "IgG4 >135 mg/dL on lab results"), a bare measurement ("SUVmax",
"Tumor HU", "T1 signal"), a task ("Polyp detection"), a whole normal study ("Normal CT") and the diagnosis
restated as its own finding ("Osteoporosis" → osteoporosis). A finding that is an absence
("No enhancement") is kept, marked `negative`. Modalities are normalised
to the DICOM-like codes the archive uses (CT, MR, US, XR, NM, PET, MG, RF, XA), and a diagnosis written with its
abbreviation ("Hepatocellular Carcinoma (HCC)") is named without it, the abbreviation kept as a synonym.
A finding's specificity is 1 / the number of diagnoses it suggests: "restricted diffusion" (over a hundred)
weighs little, "railroad track calcifications" much.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

SOURCE = "radiology-semantic-dict"
# The tables' modality words → archive modality codes ("CT/MRI" is both; "Echo" and "Ultrasound (US)" are US).
_MODALITY_WORDS = {
    "ct": "CT",
    "cta": "CT",
    "mri": "MR",
    "mr": "MR",
    "mra": "MR",
    "us": "US",
    "ultrasound": "US",
    "echo": "US",
    "doppler": "US",
    "xr": "XR",
    "radiography": "XR",
    "x-ray": "XR",
    "nm": "NM",
    "scintigraphy": "NM",
    "spect": "NM",
    "pet": "PET",
    "mammography": "MG",
    "fluoroscopy": "RF",
    "angiography": "XA",
}
_ABBREVIATION = re.compile(r"^(?P<name>.+?)\s*\((?P<short>[A-Za-z0-9-]{2,10})\)\s*$")
_WORD = re.compile(r"[a-z0-9]+")
# Rows that name no finding: a bare measurement ("SUVmax", "HU values", "Tumor HU"), a task ("Polyp detection"),
# or a whole normal study ("Normal CT").
_METRIC = re.compile(
    r"^(?:(?:tumor|lesion|mean|max|maximum)\s+)?(?:suv ?max|suv|hu|adc|ri|resistive index|attenuation|density|"
    r"signal|uptake|size|volume|diameter|ratio|(?:t1|t2)\s+signal|signal intensity)"
    r"(?:\s+(?:value|values|measurement|ratio))?$"
)
_TASK = re.compile(r"\bdetection$|^detection of\b|^(?:direct\s+)?visuali[sz]ation$")
_NORMAL = re.compile(r"^normal(?:\s+(?:ct|mri|mr|us|study|exam|examination|findings|appearance))?$")
# A place and a generic finding ("Liver lesions", "Pulmonary nodules", "Other liver lesions") is a finding, not a
# diagnosis: it would match any report that mentions a lesion.
_GENERIC_NAME = re.compile(
    r"^(?:\w+ ){0,2}(?:lesion|lesions|mass|masses|nodule|nodules|opacity|opacities|abnormality|abnormalities|"
    r"finding|findings|collection|collections)$"
)
_NEGATIVE = re.compile(r"^(?:no|without|lack of)\b")


@dataclass(frozen=True)
class Diagnosis:
    name: str  # "Hepatocellular Carcinoma"
    synonyms: tuple[str, ...] = ()  # "HCC"
    concept_id: str | None = None  # the ontology concept it is the same as, where the graph links one

    @property
    def key(self) -> str:
        return diagnosis_key(self.name)


@dataclass(frozen=True)
class Suggestion:
    """One edge of the knowledge base: `finding` suggests `diagnosis`, as `source` says."""

    finding: str
    diagnosis: str  # a `Diagnosis.name`
    source: str  # "radiology-semantic-dict:imaging_findings" | ":differential_groups" | ":imaging_signs"
    modalities: tuple[str, ...]  # archive codes; () where the table names none (a sign seen on any)
    region: str | None  # the ACR topic or body region, as the table writes it
    pathognomonic: bool = False
    negative: bool = False  # the finding is an absence ("No enhancement"): it counts only where that is stated


@dataclass
class DiagnosisKB:
    suggestions: list[Suggestion]
    diagnoses: dict[str, Diagnosis]  # by `diagnosis_key`
    dropped: Counter[str] = field(default_factory=Counter)  # reason → rows

    def specificity(self) -> dict[str, float]:
        """Finding key → 1 / the number of diagnoses it suggests."""
        by_finding: dict[str, set[str]] = {}
        for s in self.suggestions:
            by_finding.setdefault(finding_key(s.finding), set()).add(diagnosis_key(s.diagnosis))
        return {k: 1.0 / len(v) for k, v in by_finding.items()}


def name_key(name: str) -> str:
    """Lower-case words, punctuation dropped: how a finding or a diagnosis is known ("Apple-core" = "apple core")."""
    return " ".join(_WORD.findall(name.lower()))


finding_key = diagnosis_key = name_key

# "Diagnoses" in the tables that are a finding, a material or a symptom, not a disease a report would offer:
# they would match any report that mentions fat or a cyst. Dropped and counted.
NOT_DIAGNOSES = frozenset(
    name_key(n)
    for n in (
        "Blood",
        "Bilateral",
        "Calcification",
        "Calculi",
        "Cavitation",
        "Complex",
        "Compression",
        "Cyst",
        "Cysts",
        "Devascularization",
        "Edema",
        "Epilation",
        "Erosion",
        "Extravasation",
        "Fat",
        "Ferromagnetism",
        "Hypervascularity",
        "Inflammation",
        "Inflammation/Infection",
        "Infection",
        "Malignancy",
        "Masses",
        "Melanin",
        "Neoplasm",
        "Pus",
        "Recurrence",
        "Scarring",
        "Seizures",
        "Stones",
        "Trauma",
        "Tumor",
        "Tumors",
        "Margins",
        "Hypertension",
        "Hypoglycemia",
        "Migraine",
        "Epilepsy",
        "Complex Cyst",
        "Lesion",
        "Lesions",
        "Nodule",
        "Nodules",
        "Mass",
    )
)


def modalities(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Archive modality codes named in a table's modality field ("CT/MRI" → ("CT", "MR")); () for none."""
    words = [text] if isinstance(text, str) else list(text or [])
    out = []
    for word in words:
        for part in re.split(r"[/,;()]|\s+and\s+|\s+", word.lower()):
            code = _MODALITY_WORDS.get(part.strip())
            if code:
                out.append(code)
    return tuple(dict.fromkeys(out))


def split_diagnosis(name: str) -> Diagnosis:
    """ "Hepatocellular Carcinoma (HCC)" → Diagnosis("Hepatocellular Carcinoma", ("HCC",))."""
    name = " ".join(name.split())
    match = _ABBREVIATION.match(name)
    if match:
        return Diagnosis(match.group("name"), (match.group("short"),))
    return Diagnosis(name)


def _table(name: str) -> Any:
    source = importlib.resources.files("radiology_semantic") / "data" / name
    return json.loads(source.read_text(encoding="utf-8"))


def _add(kb: DiagnosisKB, finding: str, diagnosis: Any, **edge: Any) -> None:
    if isinstance(diagnosis, dict):  # some differential groups list {"name": ..., "likelihood": ...}
        diagnosis = diagnosis.get("name")
    finding, diagnosis = " ".join(str(finding or "").split()), " ".join(str(diagnosis or "").split())
    if not finding or not diagnosis:
        kb.dropped["no finding or no diagnosis"] += 1
        return
    key = finding_key(finding)
    for reason, pattern in (("a measurement, not a finding", _METRIC), ("a task, not a finding", _TASK),
                            ("a normal study, not a finding", _NORMAL)):  # fmt: skip
        if pattern.search(key):
            kb.dropped[reason] += 1
            return
    named = split_diagnosis(diagnosis)
    if named.key in NOT_DIAGNOSES or _GENERIC_NAME.match(named.key):
        kb.dropped["not a diagnosis (a finding, material or symptom)"] += 1
        return
    if key == named.key:  # "Osteoporosis" suggests osteoporosis: says nothing
        kb.dropped["the diagnosis restated"] += 1
        return
    known = kb.diagnoses.get(named.key)
    if known is None or len(named.synonyms) > len(known.synonyms):
        kb.diagnoses[named.key] = named
    kb.suggestions.append(
        Suggestion(finding=finding, diagnosis=named.name, negative=bool(_NEGATIVE.match(key)), **edge)
    )


@cache
def read_diagnosis_kb() -> DiagnosisKB:
    """The three tables as one checked knowledge base (read once per process)."""
    kb = DiagnosisKB([], {})
    for row in _table("imaging_findings.json"):
        found = modalities(row.get("modality"))
        if not found:  # a lab value or clinical history, not something an image shows
            kb.dropped["not an imaging finding (no modality)"] += 1
            continue
        _add(
            kb,
            row.get("name"),
            row.get("pathology_name"),
            source=f"{SOURCE}:imaging_findings",
            modalities=found,
            region=row.get("acr_topic"),
            pathognomonic=bool(row.get("is_pathognomonic")),
        )
    for row in _table("differential_groups.json"):
        presentation = str(row.get("presentation") or "").strip().strip('"')
        for diagnosis in row.get("differentials") or []:
            source, region = f"{SOURCE}:differential_groups", row.get("body_region")
            _add(kb, presentation, diagnosis, source=source, modalities=modalities(row.get("modality")), region=region)
    for sign in _table("imaging_signs.json").values():
        for diagnosis in sign.get("differential") or []:
            source, region = f"{SOURCE}:imaging_signs", sign.get("anatomy")
            _add(
                kb,
                sign.get("name"),
                diagnosis,
                source=source,
                modalities=modalities(sign.get("modality")),
                region=region,
            )
    return kb
