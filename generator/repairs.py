"""Repair pairs: a reference report damaged in one known way, for the refiner to learn to undo.

A retrieved draft and the reference usually describe different diseases, so draft → reference pairs alone
teach a writer to invent. A repair pair's answer is recoverable from its input: the evidence lists the
reference's findings, and the draft differs from the reference by one edit:

- `dropped`: a sentence removed (the evidence still lists its finding: put it back);
- `inserted`: a sentence from another case's report added (nothing supports it: take it out);
- `negation`: one sentence's negation flipped ("No effusion." ↔ "Effusion.": the evidence says which).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from kgreport.generator.report import split_sentences

REPAIRS = ("dropped", "inserted", "negation")
_NEGATED = re.compile(r"^(?:there is |there are )?no\s+", re.IGNORECASE)


def flip_negation(sentence: str) -> str | None:
    """The sentence with its negation flipped, or None when it has no simple one to flip."""
    stripped = sentence.strip()
    if match := _NEGATED.match(stripped):
        rest = stripped[match.end() :]
        return rest[:1].upper() + rest[1:] if rest else None
    words = stripped.split()
    if 2 <= len(words) <= 12:  # short positive statements only: "Large right pleural effusion."
        return "No " + stripped[:1].lower() + stripped[1:]
    return None


def damage(findings: str, rng: random.Random, foreign: Sequence[str]) -> tuple[str, str] | None:
    """(damaged findings text, repair kind) for a reference's findings, or None when no edit applies.

    `foreign` holds sentences of other cases' reports to insert."""
    sentences = split_sentences(findings)
    kinds = list(REPAIRS)
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "dropped" and len(sentences) >= 2:
            i = rng.randrange(len(sentences))
            return " ".join(sentences[:i] + sentences[i + 1 :]), kind
        if kind == "inserted" and foreign:
            i = rng.randrange(len(sentences) + 1)
            return " ".join([*sentences[:i], rng.choice(list(foreign)), *sentences[i:]]), kind
        if kind == "negation" and sentences:
            order = list(range(len(sentences)))
            rng.shuffle(order)
            for i in order:
                if (flipped := flip_negation(sentences[i])) is not None:
                    return " ".join([*sentences[:i], flipped, *sentences[i + 1 :]]), kind
    return None
