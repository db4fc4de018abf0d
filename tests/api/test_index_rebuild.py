"""`kgreport index rebuild` with real encoders, and indexes that refuse an encoder that did not make them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kgreport.api.cli import app
from kgreport.retrieval.encoders.ct_clip import create_model
from kgreport.retrieval.encoders.image_encoder import CTEncoder
from kgreport.usecases.settings import STAGING_SUFFIX

pytestmark = pytest.mark.slow
runner = CliRunner()
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A copy of the demo archive that a test may damage."""
    return Path(shutil.copytree(DEMO, tmp_path / "archive"))


def _build(archive: Path, name: str) -> None:
    result = runner.invoke(app, ["index", "build", str(archive), "--name", name, "--limit", "6", "--no-findings"])
    assert result.exit_code == 0, result.output


def _info(name: str) -> dict:
    result = runner.invoke(app, ["index", "info", name])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _identity(info: dict) -> dict:
    """What says which index this is (file sizes are left out: SQLite checkpoints its log at will)."""
    keys = ("cases", "images", "image_dim", "image_encoder", "image_encoder_fingerprint", "generation", "created")
    return {key: info[key] for key in keys}


def _search(name: str) -> list[dict]:
    query = sorted((DEMO / "queries").glob("*.jpg"))[0]
    result = runner.invoke(app, ["search", str(query), "--index", name, "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.splitlines()[-1])["hits"]


def _save(tmp_path: Path, config: str, name: str) -> Path:
    """An untrained encoder (seeded: the same weights every run) saved as an encoder folder."""
    torch.manual_seed(0)
    return CTEncoder(create_model(config, init="scratch"), name).save(tmp_path / name)


def test_rebuild_with_another_encoder_then_search_with_it(
    data_dir: Path, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kgreport.usecases.settings import get_settings

    _build(archive, "small")
    before = _info("small")
    tiny = _save(tmp_path, "ct-tiny", "tiny-encoder")
    rebuilt = runner.invoke(app, ["index", "rebuild", "small", "--encoder", str(tiny)])
    assert rebuilt.exit_code == 0, rebuilt.output
    after = _info("small")
    assert (after["cases"], after["images"]) == (before["cases"], before["images"])
    assert (before["image_dim"], after["image_dim"]) == (256, 32) and after["image_encoder"] == "tiny-encoder"
    assert not list((data_dir / "indexes").glob("small.*"))  # no staging copy left behind
    refused = runner.invoke(app, ["search", "--text", "brain", "--index", "small"])
    assert refused.exit_code == 2 and "32-d" in refused.output and "256-d" in refused.output
    assert "index rebuild small" in refused.output
    monkeypatch.setenv("KGREPORT_IMAGE_ENCODER", str(tiny))
    get_settings.cache_clear()
    # An untrained tower embeds every image alike, so the leakage guard takes some hits as the query itself.
    assert _search("small")


def test_an_encoder_of_the_same_size_with_other_weights_is_refused(
    data_dir: Path, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kgreport.usecases.settings import get_settings

    _build(archive, "fp")
    other = _save(tmp_path, "ct-mobilenetv2", "ct-encoder")  # the bundled name and size, other weights
    monkeypatch.setenv("KGREPORT_IMAGE_ENCODER", str(other))
    get_settings.cache_clear()
    refused = runner.invoke(app, ["search", "--text", "brain", "--index", "fp"])
    assert refused.exit_code == 2 and "another space" in refused.output and "256-d" in refused.output
    rebuilt = runner.invoke(app, ["index", "rebuild", "fp"])  # with the loaded encoder
    assert rebuilt.exit_code == 0, rebuilt.output
    assert _info("fp")["cases"] == 6
    assert _search("fp")  # an untrained tower: the leakage guard may take some hits for the query itself


def test_a_rebuild_that_cannot_finish_keeps_the_old_index(data_dir: Path, archive: Path, tmp_path: Path) -> None:
    _build(archive, "keep")
    hits = _search("keep")
    stored = _identity(_info("keep"))
    for image in (archive / "images").glob(f"{hits[0]['case_id']}_*"):
        image.unlink()  # one case's images are gone from the archive
    tiny = _save(tmp_path, "ct-tiny", "tiny-encoder")
    failed = runner.invoke(app, ["index", "rebuild", "keep", "--encoder", str(tiny)])
    assert failed.exit_code == 2 and "kept as it was" in failed.output and hits[0]["case_id"] in failed.output
    assert _identity(_info("keep")) == stored
    assert _search("keep") == hits
    assert not list((data_dir / "indexes").glob(".keep.*"))
    missing = runner.invoke(app, ["index", "rebuild", "nope"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_a_staging_copy_is_not_listed_as_an_index(data_dir: Path) -> None:
    from kgreport.retrieval.stores.local.store import CaseStore

    for name in ("real", f"real{STAGING_SUFFIX}"):
        CaseStore.create(
            data_dir / "indexes" / name, image_dim=4, text_dim=4, image_encoder="e", text_encoder="t"
        ).close()
    listed = runner.invoke(app, ["index", "list"])
    assert json.loads(listed.output)["indexes"] == ["real"]


def test_index_check_names_damage_and_repair_mends_it(data_dir: Path) -> None:
    from tests.retrieval.test_case_store import create, make_cases

    root = data_dir / "indexes" / "small"
    with create(root) as store:
        store.add_cases(make_cases(6))
        store.flush()
    sound = runner.invoke(app, ["index", "check", "small", "--json"])
    assert sound.exit_code == 0 and json.loads(sound.output)["ok"] is True

    (root / "text.faiss").unlink()  # a crash or a careless copy lost one derived file
    damaged = runner.invoke(app, ["index", "check", "small"])
    assert damaged.exit_code == 1 and "text.faiss" in damaged.output
    repaired = runner.invoke(app, ["index", "repair", "small"])
    assert repaired.exit_code == 0 and "rebuilt from store.sqlite" in repaired.output
    assert runner.invoke(app, ["index", "check", "small"]).exit_code == 0

    (root / "store.sqlite").write_bytes(b"")  # the one copy of the reports is gone: said, nothing touched
    lost = runner.invoke(app, ["index", "repair", "small"])
    assert lost.exit_code == 1 and "cannot recover" in lost.output and (root / "image.faiss").is_file()
    assert runner.invoke(app, ["index", "check", "nope"]).exit_code == 2
