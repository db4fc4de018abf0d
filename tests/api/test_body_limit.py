"""The body limit holds however a body arrives: with a Content-Length, or chunked with none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kgreport.api.service.app import create_app
from kgreport.usecases.settings import Settings

MB = 1_000_000


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """A service with a 1 MB limit; no lifespan, so no models load (the limit acts before any route)."""
    return TestClient(create_app(Settings(data_dir=tmp_path, max_upload_mb=1)))


def _chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """The body as a generator: httpx then sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _two_images(megabytes: float) -> httpx.Request:
    """An add-case form with two PNG-signed images of `megabytes` each."""
    image = b"\x89PNG\r\n\x1a\n" + b"0" * int(megabytes * MB)
    return httpx.Request(
        "POST",
        "http://test/v1/indexes/demo/cases",
        data={"case_id": "BIG", "report": "Findings: none."},
        files=[("images", ("a.png", image, "image/png")), ("images", ("b.png", image, "image/png"))],
    )


def _assert_413(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "upload_too_large"
    assert answer.headers["connection"] == "close"  # the rest of the body was never read


def test_a_declared_length_over_the_limit_is_refused_before_reading(client: TestClient) -> None:
    request = _two_images(0.7)
    body = request.read()
    _assert_413(client.post(request.url.path, content=body, headers={"content-type": request.headers["content-type"]}))


def test_a_chunked_multipart_body_is_counted_as_it_streams(client: TestClient, tmp_path: Path) -> None:
    request = _two_images(0.7)
    content_type = request.headers["content-type"]
    answer = client.post(request.url.path, content=_chunked(request.read()), headers={"content-type": content_type})
    _assert_413(answer)
    assert "content-length" not in {k.lower() for k in answer.request.headers}, "the test sent it chunked"
    stored = [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()] if (tmp_path / "uploads").exists() else []
    assert stored == [], "nothing of the refused body is kept"


def test_a_chunked_json_body_is_not_read_whole(client: TestClient) -> None:
    body = json.dumps({"text": "mass", "index": "demo", "padding": "x" * (3 * MB)}).encode()
    answer = client.post("/v1/search", content=_chunked(body), headers={"content-type": "application/json"})
    _assert_413(answer)


def test_a_chunked_body_under_the_limit_is_served(client: TestClient) -> None:
    body = json.dumps({"text": "mass", "index": "nowhere"}).encode()
    answer = client.post("/v1/search", content=_chunked(body, 8), headers={"content-type": "application/json"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "index_not_found", answer.text
