"""Scoring a report against hand-written key facts, by rules alone (no project model).

The facts come with the hand-written notes in `data/notes/` (`data/notes/README.md` says how they were
made): each is a term (with synonyms), a status (present / absent / uncertain), a side and the numbers its
notes item states. The report's sentences (Findings and Impression) are searched for the term as whole
words (a plural "s"/"es" allowed), and a mention is negated when a negation cue ("no", "without", "not",
"negative for", "free of", ...) stands before it in the same clause, or "is not seen" / "absent" / "is
normal" / "is intact" follows it ("The coronaries are normal" states no coronary abnormality). A mention
followed by "protocol" ("PE protocol") names what the exam looked for and is not a mention.
None of this uses the project's extractor, lexicon or models: an evaluation must not be scored by the
system it evaluates.

Per case:
- `fact_recall`: facts stated with their status kept (a present or uncertain fact mentioned not negated, an
  absent fact mentioned negated), over all facts;
- `side_kept`: facts with a side whose stating sentence names that side, over facts with a side;
- `numbers_kept`: the facts' numbers ("2.3 x 1.8 cm", "L4-5") found in the report, over all their numbers;
- `negation_flips`: absent facts stated present anywhere, and present facts mentioned only negated;
- `words_ratio`: words of Findings per word of notes;
- `truncated`: sentences that end without a full stop, with "..." or on a dangling word ("with", "a", "right-");
- `diagnosis_top5`: the case's diagnosis (or an accepted name) among the first five differential items, by
  normalised equality or the item containing an accepted name as a whole phrase (never the reverse, so a
  generic "carcinoma" does not count for "renal cell carcinoma").
For image-only drafts, `foreign_details` counts sentences stating a measurement, an age or a sex (none of
which an image-only draft can know of this patient) and an Impression that states a diagnosis as fact.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|absent|negative for|free of|nor|neither|never|resolved|rather than|instead of)\b"
    r"|\bno(?:n)?-",
    re.IGNORECASE,
)
NEGATION_AFTER = re.compile(
    r"^[^.;]{0,40}?\b(?:(?:is|are|was|were|has|have been)\s+(?:not|no longer)\b|not\s+(?:seen|identified|present|"
    r"visuali[sz]ed|demonstrated|evident|appreciated|detected)|absent\b|(?:is|are)\s+excluded|ruled out|"
    r"(?:is|are|appears?|remains?)\s+(?:otherwise\s+)?(?:normal|unremarkable|intact|preserved))"
    r"|^\s+(?:otherwise\s+)?(?:normal|unremarkable|intact)\b",
    re.IGNORECASE,
)
PROTOCOL = re.compile(r"\s+(?:protocol|study|exam)\b", re.IGNORECASE)
CLAUSE_BREAK = re.compile(
    r"[;:]|\b(?:but|however|although|though|while|whereas|with|which|and there is)\b", re.IGNORECASE
)
UNCERTAIN = re.compile(
    r"\?|\b(?:possible|possibly|probable|probably|likely|questionable|suspicious|suspected|concerning|may|might|"
    r"could|cannot be excluded|cannot exclude|can not be excluded|not excluded|suggest\w*|differential|versus|vs)\b",
    re.IGNORECASE,
)
SIDES = {
    "right": re.compile(r"\bright\b|\brt\b", re.IGNORECASE),
    "left": re.compile(r"\bleft\b|\blt\b", re.IGNORECASE),
    "bilateral": re.compile(
        r"\bbilateral(?:ly)?\b|\bboth\b|\bb/l\b|\bright and left\b|\bleft and right\b", re.IGNORECASE
    ),
}
DANGLING = frozenset(
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
    ]
)
MEASUREMENT = re.compile(r"\b\d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*)*(?:mm|cm|ml|cc|m)\b", re.IGNORECASE)
AGE_SEX = re.compile(
    r"\b\d+[- ](?:year|yr|month|week|day)s?[- ]old\b|\b(?:male|female|man|woman|boy|girl|gentleman|lady)\b",
    re.IGNORECASE,
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")


@dataclass(frozen=True)
class Fact:
    term: str
    synonyms: tuple[str, ...]
    status: str  # present | absent | uncertain
    side: str | None
    numbers: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fact:
        return cls(
            term=str(data["term"]),
            synonyms=tuple(str(s) for s in data.get("synonyms") or ()),
            status=str(data["status"]),
            side=data.get("side") or None,
            numbers=tuple(str(n) for n in data.get("numbers") or ()),
        )


@dataclass
class CaseScore:
    facts: int = 0
    recalled: int = 0
    sided: int = 0
    side_kept: int = 0
    numbers: int = 0
    numbers_kept: int = 0
    negation_flips: int = 0
    findings_words: int = 0
    notes_words: int = 0
    sentences: int = 0
    truncated: int = 0
    diagnosis_top5: bool = False
    diagnosis_top1: bool = False
    foreign_details: int = 0
    missed: list[str] = field(default_factory=list)
    flipped: list[str] = field(default_factory=list)
    truncated_sentences: list[str] = field(default_factory=list)
    foreign_sentences: list[str] = field(default_factory=list)

    @property
    def words_ratio(self) -> float:
        return self.findings_words / self.notes_words if self.notes_words else 0.0


def split_sentences(text: str) -> list[str]:
    """Sentences of report text: at ". " before a capital, and at line breaks."""
    out: list[str] = []
    for line in (text or "").splitlines():
        out += [s.strip() for s in SENTENCE_END.split(line) if s.strip()]
    return out


def _pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s-]+", phrase.strip().lower()) if w]
    body = r"[\s-]+".join(words)
    return re.compile(rf"(?<![\w-]){body}(?:s|es)?(?![\w])", re.IGNORECASE)


def _negated(sentence: str, start: int, end: int) -> bool:
    before = sentence[:start]
    clause = CLAUSE_BREAK.split(before)[-1]
    if NEGATION_BEFORE.search(clause):
        return True
    # "the tendons are normal" may be the fact's own phrase: the cue is read from the mention's start too
    return bool(NEGATION_AFTER.search(sentence[end:]) or NEGATION_AFTER.search(sentence[start:]))


def mentions(fact: Fact, sentences: Sequence[str]) -> list[tuple[str, bool]]:
    """Each (sentence, negated) where the fact's term or a synonym is named."""
    patterns = [_pattern(p) for p in (fact.term, *fact.synonyms) if p.strip()]
    out = []
    for sentence in sentences:
        # "PE protocol" names what the exam looked for, not a finding
        spans = [m.span() for p in patterns for m in p.finditer(sentence) if not PROTOCOL.match(sentence, m.end())]
        if spans:
            out.append((sentence, all(_negated(sentence, s, e) for s, e in spans)))
    return out


def truncated(sentence: str) -> bool:
    """Cut off: no closing punctuation, an ellipsis, or a last word that cannot end a sentence."""
    text = sentence.strip().rstrip("\"')]")
    if not text or text.endswith(("...", "…", "-.", "- .")) or text[-1] not in ".!?":
        return True
    last = re.findall(r"[\w-]+", text)
    return bool(last) and (last[-1].lower() in DANGLING or last[-1].endswith("-"))


def _side_of(sentence: str, sentences: Sequence[str], side: str) -> bool:
    """The side a sentence states: its own, else the last side named in the sentences before it (a report,
    like notes, names a side once for what follows until another side is named)."""
    named = [s for s, pattern in SIDES.items() if pattern.search(sentence)]
    if not named and sentence in sentences:
        for before in reversed(sentences[: sentences.index(sentence)]):
            named = [s for s, pattern in SIDES.items() if pattern.search(before)]
            if named:
                break
    # a sentence naming both sides states a bilateral finding ("encases the left ICA, into the right sinus")
    return side in named or (side == "bilateral" and {"right", "left"} <= set(named))


def _normal(name: str) -> str:
    words = re.findall(r"[a-z0-9]+", name.lower())
    return " ".join(w[:-1] if len(w) > 4 and w.endswith("s") else w for w in words if w not in {"the", "of", "a", "an"})


def names_diagnosis(item: str, accepted: Iterable[str]) -> bool:
    """Strict: equal after normalising, or the item contains an accepted name as a whole phrase."""
    own = f" {_normal(item)} "
    return any(f" {_normal(a)} " in own for a in accepted if _normal(a))


def _number_norm(text: str) -> str:
    text = re.sub(r"\b([ctls])(\d{1,2})\s*-\s*\1(\d{1,2})\b", r"\1\2-\3", text.lower())  # "C2-C3" is "C2-3"
    return re.sub(r"\s*([x×\-–])\s*", r"\1", " ".join(text.lower().split())).replace("×", "x").replace("–", "-")


def score_case(
    *,
    facts: Sequence[Fact],
    notes: str,
    findings: Sequence[str],
    impression: str,
    differential: Sequence[str],
    diagnosis_names: Sequence[str],
    image_only: bool = False,
) -> CaseScore:
    """One report scored against its facts (see the module docstring)."""
    impression_sentences = split_sentences(impression)
    sentences = [*findings, *impression_sentences]
    score = CaseScore(facts=len(facts), notes_words=len(notes.split()))
    score.findings_words = sum(len(s.split()) for s in findings)
    for fact in facts:
        found = mentions(fact, sentences)
        stated = [s for s, negated in found if negated == (fact.status == "absent")]
        if stated:
            score.recalled += 1
        else:
            score.missed.append(fact.term)
        if fact.status == "absent" and any(not negated for _, negated in found):
            score.negation_flips += 1
            score.flipped.append(fact.term)
        if fact.status != "absent" and found and all(negated for _, negated in found):
            score.negation_flips += 1
            score.flipped.append(fact.term)
        if fact.side:
            score.sided += 1
            if any(_side_of(sentence, sentences, fact.side) for sentence in stated):
                score.side_kept += 1
        text = _number_norm(" ".join(sentences))
        for number in fact.numbers:
            score.numbers += 1
            score.numbers_kept += _number_norm(number) in text
    score.sentences = len(sentences)
    for sentence in sentences:
        if truncated(sentence):
            score.truncated += 1
            score.truncated_sentences.append(sentence)
    score.diagnosis_top5 = any(names_diagnosis(d, diagnosis_names) for d in differential[:5])
    score.diagnosis_top1 = any(names_diagnosis(d, diagnosis_names) for d in differential[:1])
    if image_only:
        for sentence in findings:
            if MEASUREMENT.search(sentence) or AGE_SEX.search(sentence):
                score.foreign_details += 1
                score.foreign_sentences.append(sentence)
        for sentence in impression_sentences:
            if AGE_SEX.search(sentence) or MEASUREMENT.search(sentence) or not _hedged_or_listing(sentence):
                score.foreign_details += 1
                score.foreign_sentences.append(sentence)
    return score


def _hedged_or_listing(sentence: str) -> bool:
    """An image-only Impression may list the similar cases, abstain or hedge; it may not state a diagnosis."""
    lowered = sentence.lower()
    return lowered.startswith(("similar prior cases", "no confident draft", "read the image")) or bool(
        UNCERTAIN.search(sentence)
    )


def summary(scores: Sequence[CaseScore]) -> dict[str, Any]:
    """Pooled rates over cases (facts pooled across cases; the words ratio is the median of cases)."""
    facts = sum(s.facts for s in scores)
    sided = sum(s.sided for s in scores)
    numbers = sum(s.numbers for s in scores)
    ratios = [s.words_ratio for s in scores if s.notes_words]
    return {
        "cases": len(scores),
        "facts": facts,
        "fact_recall": sum(s.recalled for s in scores) / facts if facts else None,
        "side_kept": sum(s.side_kept for s in scores) / sided if sided else None,
        "sided_facts": sided,
        "numbers_kept": sum(s.numbers_kept for s in scores) / numbers if numbers else None,
        "negation_flips": sum(s.negation_flips for s in scores),
        "truncated_sentences": sum(s.truncated for s in scores),
        "sentences": sum(s.sentences for s in scores),
        "median_words_ratio": statistics.median(ratios) if ratios else None,
        "diagnosis_top5": sum(s.diagnosis_top5 for s in scores) / len(scores) if scores else None,
        "diagnosis_top1": sum(s.diagnosis_top1 for s in scores) / len(scores) if scores else None,
        "foreign_details": sum(s.foreign_details for s in scores),
    }
