"""Shared fixtures: where the real data lives, and an isolated data dir per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEMO_ARCHIVE = REPO / "data" / "demo"
SHARED_MEDPIX = REPO.parent / "shared" / "data" / "medpix2"


@pytest.fixture
def demo_archive() -> Path:
    return DEMO_ARCHIVE


@pytest.fixture
def medpix_root() -> Path:
    """The full MedPix 2.0 train/dev data beside the repository (CI has it), else the bundled demo."""
    return SHARED_MEDPIX if (SHARED_MEDPIX / "data_train.jsonl").is_file() else DEMO_ARCHIVE


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty KGREPORT_DATA_DIR for the test, and fresh settings."""
    from api.settings import get_settings

    monkeypatch.setenv("KGREPORT_DATA_DIR", str(tmp_path / "kg"))
    get_settings.cache_clear()
    yield tmp_path / "kg"
    get_settings.cache_clear()
