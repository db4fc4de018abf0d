from pathlib import Path

import pytest

from kgreport.usecases.settings import Settings


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KGREPORT_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("KGREPORT_EXACT_SEARCH_THRESHOLD", "500")
    monkeypatch.setenv("KGREPORT_LEAKAGE_GUARD", "false")
    settings = Settings()
    assert settings.data_dir == tmp_path / "d"
    assert settings.exact_search_threshold == 500 and settings.leakage_guard is False
    assert settings.index_dir("demo") == tmp_path / "d" / "indexes" / "demo"


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".", "..", "x\n", "nul\x00", "x" * 129])
def test_index_names_cannot_escape_the_data_dir(name: str) -> None:
    with pytest.raises(ValueError, match="invalid index name"):
        Settings().index_dir(name)


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGREPORT_HYBRID_IMAGE_WEIGHT", "1.5")
    with pytest.raises(ValueError, match="hybrid_image_weight"):
        Settings()


def test_notes_with_llm_is_the_writers_choice_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from kgreport.generator.config import WriterConfig

    assert Settings().notes_with_llm is None
    # The bundled writer leaves its LLM out of notes mode (benchmarks/results/notes_quality.json).
    assert WriterConfig.load(Settings().report_generator_dir).notes_with_llm is False
    monkeypatch.setenv("KGREPORT_NOTES_WITH_LLM", "true")
    assert Settings().notes_with_llm is True
    monkeypatch.setenv("KGREPORT_NOTES_WITH_LLM", "maybe")
    with pytest.raises(ValueError, match="notes_with_llm"):
        Settings()
