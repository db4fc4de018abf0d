"""Finding extraction with the real spaCy / scispaCy / negspacy pipeline over the bundled ontology."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.extraction.lexicon import build_lexicon

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _by_name(findings):  # type: ignore[no-untyped-def]
    return {f.name.lower(): f for f in findings}


def test_present_absent_uncertain(extractor: FindingExtractor) -> None:
    text = (
        "Acute appendicitis with periappendiceal abscess. No pleural effusion. "
        "Findings may represent pneumonia versus atelectasis. Hepatic steatosis cannot be excluded."
    )
    found = _by_name(extractor.extract(text))
    assert found["acute appendicitis"].status == "present"
    assert found["pleural effusion"].status == "absent"
    assert found["pneumonia"].status == "uncertain" and found["atelectasis"].status == "uncertain"
    assert found["fatty liver"].status == "uncertain" and found["fatty liver"].text == "Hepatic steatosis"
    appendicitis = found["acute appendicitis"]
    assert text[appendicitis.start : appendicitis.end] == "Acute appendicitis"


def test_location_in_the_same_phrase(extractor: FindingExtractor) -> None:
    findings = extractor.extract("There is a 2 cm mass in the lobe. The liver is normal.")
    mass = next(f for f in findings if f.text == "mass")
    assert mass.location_concept_id == "RID5967"  # lobe


def test_a_finding_word_is_found_whatever_its_case(extractor: FindingExtractor) -> None:
    """spaCy keeps "Mass." (Massachusetts) as one token; a one-word sentence "Mass." is still the finding."""
    for text in ("mass. lesion.", "Mass. Lesion.", "MASS. LESION."):
        assert set(_by_name(extractor.extract(text))) == {"mass", "lesion"}, text
    assert [f.status for f in extractor.extract("No lymphadenopathy. Mass.")] == ["absent", "present"]


def test_garbage_foreign_and_huge_inputs(extractor: FindingExtractor) -> None:
    assert extractor.extract("") == []
    assert extractor.extract("§§§ 12345 ≠≠≠ \\\\ ' \" MATCH (n) DETACH DELETE n") == []
    assert extractor.extract("Der Patient hat keine Beschwerden und wurde entlassen.") == []
    huge = "No pleural effusion. " * 50_000  # ~1 MB
    started = time.perf_counter()
    findings = extractor.extract(huge)
    assert time.perf_counter() - started < 120
    assert findings and all(f.status == "absent" for f in findings)


def test_kg_findings_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgreport.api.cli import app
    from kgreport.usecases.settings import get_settings

    monkeypatch.setenv("KGREPORT_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    reports = tmp_path / "reports.txt"
    reports.write_text("No pleural effusion.\nPossible pneumonia.\n")
    result = CliRunner().invoke(app, ["kg", "findings", "--file", str(reports), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["findings"][0]["status"] for line in lines] == ["absent", "uncertain"]
    assert set(lines[0]["findings"][0]) == {
        "concept_id",
        "name",
        "text",
        "start",
        "end",
        "status",
        "location_concept_id",
    }
    get_settings.cache_clear()


# -- radiology rules (benchmarked in benchmarks/extraction_quality.py) ---------------------------------
@pytest.fixture(scope="module")
def sm_extractor(tmp_path_factory: pytest.TempPathFactory) -> FindingExtractor:
    """The en_core_web_sm variant (the session `extractor` fixture is the default, blank English)."""
    folder = REPO / "data" / "ontology"
    lexicon = build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    return FindingExtractor(lexicon, tmp_path_factory.mktemp("cache-sm"), base="en_core_web_sm")


def _statuses(extractor: FindingExtractor, text: str) -> dict[str, str]:
    return {f.text.lower(): f.status for f in extractor.extract(text)}


def test_negation_scope_and_technique_phrases(extractor: FindingExtractor) -> None:
    assert _statuses(extractor, "MRI without fat saturation shows a mass in the liver.") == {"mass": "present"}
    assert _statuses(extractor, "No pleural effusion; small pneumothorax.") == {
        "pleural effusion": "absent",
        "pneumothorax": "present",
    }
    assert _statuses(extractor, "Calcifications are not seen.") == {"calcifications": "absent"}
    assert _statuses(extractor, "No diastolic jet to suggest aortic insufficiency was seen (not shown).") == {
        "aortic insufficiency": "absent"
    }
    assert _statuses(extractor, "No bone or liver mets. No evidence of free air.") == {
        "mets": "absent",
        "free air": "absent",
    }


def test_consistent_with_is_present_hedges_are_uncertain(extractor: FindingExtractor) -> None:
    assert _statuses(extractor, "Findings consistent with acute cholecystitis.") == {"cholecystitis": "present"}
    assert set(_statuses(extractor, "DDX includes metastasis, atelectasis, or infection.").values()) == {"uncertain"}
    assert _statuses(extractor, "Rule out pneumonia.") == {"pneumonia": "uncertain"}


def test_plurals_spellings_and_participles(extractor: FindingExtractor) -> None:
    found = {f.text: f for f in extractor.extract("Bilateral pleural effusions and multiple metastases.")}
    assert found["pleural effusions"].name == "Pleural Effusion" and found["metastases"].name == "metastasis"
    found = {f.text: f for f in extractor.extract("Dilated esophagus. Bladder with thickened wall.")}
    assert found["Dilated"].name == "dilation" and found["Dilated"].location_concept_id  # the esophagus
    assert found["thickened"].name == "thickening"


def test_generic_terms_and_exam_names(extractor: FindingExtractor) -> None:
    findings = extractor.extract("A mass in the frontal horn with a sclerotic margin and a focus of enhancement.")
    assert [(f.text, f.concept_id) for f in findings] == [("mass", "RID3874"), ("enhancement", "RID34300")]
    assert extractor.extract("CT images from a PE/DVT protocol. Head CT with stroke window settings.") == []


@pytest.mark.parametrize("base", ["en_core_web_sm", "blank"])
def test_linker_fixes_spelling_but_adds_no_words(
    base: str, extractor: FindingExtractor, sm_extractor: FindingExtractor
) -> None:
    ex = sm_extractor if base == "en_core_web_sm" else extractor
    [finding] = ex.extract("There is hydrocephaplus.")
    assert (finding.text, finding.name) == ("hydrocephaplus", "hydrocephalus")
    assert [f.name for f in ex.extract("Bladder with diverticulum.")] == ["diverticulum"]  # not "bladder sign"


def test_lexicon_names_beat_synonyms_and_drop_descriptors() -> None:
    folder = REPO / "data" / "ontology"
    owners: dict[str, list[str]] = {}
    for e in build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz"):
        if e.kind == "finding":
            for alias in e.aliases:
                owners.setdefault(alias.lower(), []).append(e.concept_id)
    assert owners["mass"] == ["RID3874"]  # RadLex "mass", not the synonym of "pulmonary mass"
    assert all(len(ids) == 1 for ids in owners.values())
    assert "margin" not in owners and "focus" not in owners and "echotexture" not in owners
    assert owners["mets"] == ["RID5231"]


def test_word_helpers() -> None:
    from kgreport.knowledge.extraction.extractor import _covers, plurals

    assert plurals("lesion") == ["lesions"] and plurals("mass") == ["masses"]
    assert plurals("metastasis") == ["metastases"] and plurals("diverticulum")[0] == "diverticula"
    assert plurals("opacity") == ["opacities"] and plurals("thrombus")[0] == "thrombi"
    assert _covers("cystic lesin", "lesion") and _covers("infarct", "infarction")
    assert not _covers("bladder", "bladder sign") and not _covers("fluid level", "fluid-fluid level")
    assert not _covers("bicornuate uterus", "unicornuate uterus") and not _covers("sinus", "sinusitis")


def test_gold_set_is_well_formed() -> None:
    """The extraction benchmark's gold set: spans match their text, statuses are known."""
    from kgreport.benchmarks.extraction_quality import GOLD, MEDPIX, load_gold, select_sentences

    gold = load_gold(GOLD)
    assert len(gold) >= 120 and len({g["case_id"] for g in gold}) >= 60
    for item in gold:
        for m in item["findings"]:
            assert item["sentence"][m["start"] : m["end"]] == m["text"]
            assert m["status"] in {"present", "absent", "uncertain"} and isinstance(m["concept_ids"], list)
    dev = MEDPIX / "data_dev.jsonl"
    if dev.is_file():  # the selection is reproducible from MedPix dev
        assert [(g["case_id"], g["sentence"]) for g in gold] == select_sentences(dev)
