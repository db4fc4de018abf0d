"""`/openapi.json` documents what every JSON route answers: a response model naming its fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kgreport.api.service.app import create_app
from kgreport.usecases.settings import Settings

# A field of each route's answer that a client relies on; the model must name them all.
NAMED = {
    ("get", "/healthz"): {"status", "worker_pid"},
    ("get", "/readyz"): {"ready", "checks"},
    ("post", "/v1/indexes"): {"job", "status_url"},
    ("post", "/v1/indexes/{name}/sync"): {"job", "status_url"},
    ("get", "/v1/jobs/{job_id}"): {"id", "state", "progress", "result", "error"},
    ("get", "/v1/indexes"): {"indexes"},
    ("post", "/v1/indexes/{name}/cases"): {"index", "cases_added", "images_added", "skipped"},
    ("delete", "/v1/indexes/{name}/cases/{case_id}"): {"index", "deleted", "not_found"},
    ("get", "/v1/cases/{case_id}"): {"case_id", "report", "images", "metadata"},
    ("post", "/v1/search"): {"index", "query", "hits", "predicted"},
    ("post", "/v1/reports"): {"index", "report", "text", "seconds"},
    ("get", "/v1/concepts/{concept_id}"): {"concept_id", "name", "ancestors", "archive"},
}


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=Path(tmp_path_factory.mktemp("openapi"))))
    with TestClient(app) as client:
        return dict(client.get("/openapi.json").json())


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _success_json(operation: dict[str, Any]) -> dict[str, Any] | None:
    for status, response in operation["responses"].items():
        if status.startswith("2"):
            content = response.get("content", {})
            if "application/json" in content:
                return dict(content["application/json"]["schema"])
    return None


def test_every_json_route_names_the_fields_it_answers(schema: dict[str, Any]) -> None:
    seen = set()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            answer = _success_json(operation)
            if answer is None:  # a PNG, the page
                continue
            seen.add((method, path))
            model = _resolve(schema, answer)
            assert model.get("properties"), f"{method.upper()} {path} answers JSON the schema does not describe"
            missing = NAMED.get((method, path), set()) - set(model["properties"])
            assert not missing, f"{method.upper()} {path}: the schema does not name {sorted(missing)}"
    assert set(NAMED) <= seen, f"routes gone from the schema: {sorted(set(NAMED) - seen)}"


def test_nested_answers_are_described_too(schema: dict[str, Any]) -> None:
    """A search hit, a job and a report sentence are models, not bare objects."""
    components = schema["components"]["schemas"]
    assert {"case_id", "score", "thumbnail_url"} <= set(components["SearchHit"]["properties"])
    assert {"state", "progress"} <= set(components["Job"]["properties"])
    assert {"sentence", "status", "cited_case_ids", "supported"} <= set(components["ReportSentence"]["properties"])
    report = schema["paths"]["/v1/reports"]["post"]
    form = _resolve(schema, report["requestBody"]["content"]["multipart/form-data"]["schema"])
    budget = form["properties"]["max_new_tokens"]
    assert budget.get("default") is None, "the writer's config decides the budget unless the request says"
