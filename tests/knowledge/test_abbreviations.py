"""The abbreviation lexicon: our file and radiology-semantic-dict's table, senses chosen by the item's words."""

from pathlib import Path

import pytest

from kgreport.knowledge.extraction.abbreviations import LexiconError, load_lexicon, read_shorthand
from kgreport.knowledge.extraction.shorthand import expand_shorthand

HEADER = "abbreviation\texpansion\tmatch\tcontext\n"


def test_both_sources_are_read_and_ours_win() -> None:
    lexicon = load_lexicon()
    sources = {a.source for a in lexicon.entries.values()}
    assert sources == {"kgreport", "radiology-semantic-dict"}
    assert lexicon.entries["PTX"].source == "kgreport"
    assert lexicon.entries["AVM"].senses[0].expansion == "arteriovenous malformation"
    assert "t2" in lexicon.kept and "T2" not in lexicon.entries


@pytest.mark.parametrize(
    ("typed", "modality", "expected"),
    [
        ("PD dilated 4mm", None, "pancreatic duct dilated 4 mm"),
        ("PD hyperintense", "MR", "proton density hyperintense"),
        ("PD", None, "PD"),  # no cue, no default: left as typed
        ("CC thinned", None, "corpus callosum thinned"),
        ("CC 4.2 cm", None, "craniocaudal 4.2 cm"),
        ("hydro with shunt", None, "hydrocephalus with shunt"),
        ("hydro, renal stone", None, "hydronephrosis, renal stone"),
        ("T2 bright", None, "T2 bright"),  # kept as typed
    ],
)
def test_a_sense_is_chosen_by_the_item(typed: str, modality: str | None, expected: str) -> None:
    assert expand_shorthand(typed, modality) == expected


def test_the_tables_acronyms_match_only_in_upper_case() -> None:
    table = [a for a in load_lexicon().entries.values() if a.source == "radiology-semantic-dict"]
    assert len(table) > 50 and all(a.case_sensitive and a.key.isupper() for a in table)


def test_a_bad_file_is_named_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "shorthand.tsv"
    path.write_text(HEADER + "RUL\tright upper lobe\tsometimes\t\n")
    with pytest.raises(LexiconError, match=r"row 2 \(RUL\): match must be"):
        read_shorthand(path)
    path.write_text(HEADER + "XX\tone\tany\t\nXX\ttwo\tany\t\n")
    with pytest.raises(LexiconError, match="XX has several senses"):
        read_shorthand(path)
    path.write_text("abbrev\tmeaning\n")
    with pytest.raises(LexiconError, match="first row must be the header"):
        read_shorthand(path)
    path.write_text(HEADER + "XX\tone\tany\tlung\nXX\ttwo\tany\t*\nYY\tYY\tkeep\t\n")
    entries, kept = read_shorthand(path)
    assert entries["XX"].resolve("lung mass") == "one" and entries["XX"].resolve("brain") == "two"
    assert kept == {"yy"}
