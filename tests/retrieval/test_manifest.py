"""The index manifest record: checked when read, written atomically, and nothing a newer version wrote is lost."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from kgreport.retrieval.manifest import FORMAT_VERSION, IndexManifest, IndexUnreadableError


def test_a_manifest_round_trips_and_keeps_keys_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    made = IndexManifest.new(image_dim=256, text_dim=384, image_encoder="ct", text_encoder="minilm")
    manifest = replace(made, faiss_generation=3)
    manifest.extra["added_by_a_newer_version"] = {"x": 1}
    manifest.save(path)
    stored = json.loads(path.read_text())
    assert stored["format_version"] == FORMAT_VERSION and stored["faiss_generation"] == 3
    assert "collections" not in stored and "backend" not in stored, "what a local index does not have, it does not say"
    again = IndexManifest.load(path)
    assert again == manifest and again.extra == {"added_by_a_newer_version": {"x": 1}}


@pytest.mark.parametrize(
    ("data", "error", "says"),
    [
        ([1, 2], IndexUnreadableError, "JSON object"),
        ({"format_version": 99, "image_dim": 2, "text_dim": 2, "image_encoder": "a", "text_encoder": "b"}, ValueError,
         "index format 99"),
        ({"format_version": FORMAT_VERSION, "image_dim": 2, "image_encoder": "a", "text_encoder": "b"}, ValueError,
         "missing text_dim"),
        ({"format_version": FORMAT_VERSION, "image_dim": 0, "text_dim": 2, "image_encoder": "a", "text_encoder": "b"},
         ValueError, "image_dim 0 is not a positive integer"),
    ],
)  # fmt: skip
def test_a_bad_manifest_names_where_and_what(data: object, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says) as raised:
        IndexManifest.from_json(data, "idx/manifest.json")
    assert "idx/manifest.json" in str(raised.value)


def test_a_file_that_is_not_json_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexUnreadableError, match="manifest.json: not a readable manifest"):
        IndexManifest.load(tmp_path / "manifest.json")
