"""Security headers on every answer (the page, its static files, JSON, errors) and CORS: off by default,
on for the configured origins only. The page working under its policy is checked in a real browser
(`test_web_page.py`)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from kgreport.api.service.app import create_app
from kgreport.api.service.security_headers import DOCS_POLICY, PAGE_POLICY
from kgreport.usecases.settings import Settings

PREFLIGHT = {"Origin": "https://ris.example.org", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "x-api-key, content-type"}  # fmt: skip


def test_every_answer_carries_the_headers(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path, api_keys="k")))
    answers = {
        "page": client.get("/"),
        "script": client.get("/static/app.js"),
        "style": client.get("/static/style.css"),
        "missing static file": client.get("/static/nothing.js"),
        "json": client.get("/v1/indexes", headers={"X-API-Key": "k"}),
        "refused": client.get("/v1/indexes"),
        "unknown route": client.get("/v1/nothing"),
        "health": client.get("/healthz"),
    }
    assert answers["page"].status_code == 200 and "text/html" in answers["page"].headers["content-type"]
    assert answers["refused"].status_code == 401 and answers["missing static file"].status_code == 404
    for name, answer in answers.items():
        headers = answer.headers
        assert headers["content-security-policy"] == PAGE_POLICY, name
        assert "frame-ancestors 'none'" in headers["content-security-policy"], name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer", name
    assert "'unsafe-inline'" not in PAGE_POLICY and "script-src 'self';" in PAGE_POLICY
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == DOCS_POLICY
    assert docs.headers["x-content-type-options"] == "nosniff"


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path)))
    preflight = client.options("/v1/search", headers=PREFLIGHT)
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    read = client.get("/v1/indexes", headers={"Origin": "https://ris.example.org"})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_cors_for_the_configured_origins_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cors_origins="https://ris.example.org/, https://pacs.example.org")
    assert settings.cors_origin_list == ["https://ris.example.org", "https://pacs.example.org"]
    client = TestClient(create_app(settings))
    preflight = client.options("/v1/search", headers=PREFLIGHT)
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://ris.example.org"
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
    read = client.get("/v1/indexes", headers={"Origin": "https://pacs.example.org"})
    assert read.headers["access-control-allow-origin"] == "https://pacs.example.org"
    assert read.headers["content-security-policy"] == PAGE_POLICY
    stranger = client.options("/v1/search", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
