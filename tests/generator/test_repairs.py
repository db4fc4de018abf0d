"""Repair pairs: each damage is one known, recoverable edit of the reference."""

from __future__ import annotations

import random

from kgreport.generator.repairs import damage, flip_negation
from kgreport.generator.report import split_sentences

REFERENCE = "Large right pleural effusion. No pneumothorax. Mild cardiomegaly."


def test_flip_negation_both_ways() -> None:
    assert flip_negation("No pneumothorax.") == "Pneumothorax."
    assert flip_negation("There is no free air.") == "Free air."
    assert flip_negation("Mild cardiomegaly.") == "No mild cardiomegaly."
    assert flip_negation("word " * 20) is None


def test_each_damage_is_one_edit_away() -> None:
    seen = set()
    for seed in range(30):
        damaged, kind = damage(REFERENCE, random.Random(seed), ["Foreign body in the stomach."]) or ("", "")
        seen.add(kind)
        before, after = split_sentences(REFERENCE), split_sentences(damaged)
        if kind == "dropped":
            assert len(after) == len(before) - 1 and set(after) < set(before)
        elif kind == "inserted":
            assert len(after) == len(before) + 1 and "Foreign body in the stomach." in after
        else:
            assert kind == "negation" and len(after) == len(before)
            assert sum(a != b for a, b in zip(after, before, strict=True)) == 1
    assert seen == {"dropped", "inserted", "negation"}
    assert damage("", random.Random(0), []) is None
