"""Finding extraction with the real spaCy / scispaCy / negspacy pipeline over the bundled ontology."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowledge.extraction.extractor import FindingExtractor
from knowledge.extraction.lexicon import build_lexicon

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> FindingExtractor:
    folder = REPO / "data" / "ontology"
    lexicon = build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    return FindingExtractor(lexicon, tmp_path_factory.mktemp("cache"))


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
    from api.cli import app
    from api.settings import get_settings

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
