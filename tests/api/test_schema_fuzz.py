"""A bounded schemathesis run against the OpenAPI schema: whatever the schema allows, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from kgreport.api.service.app import create_app
from kgreport.usecases.ingest import IngestRequest, ingest_archive
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    """The live schema of a service over a small demo index (10 cases)."""
    config = Settings(data_dir=tmp_path_factory.mktemp("fuzz"), max_upload_mb=1)
    services = Services(config)
    ingest_archive(services, IngestRequest("demo", DEMO, limit=10, findings=False))
    services.close()
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(config))


def test_no_server_errors(api_schema: schemathesis.BaseSchema) -> None:
    """Up to 12 generated requests per operation (deterministic), each answered below 500.

    Hypothesis drives each operation directly: schemathesis' pytest plugin does not run under pytest 9."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def no_5xx(case: schemathesis.Case) -> None:
            response = case.call()
            calls.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )

        no_5xx()
    assert len(calls) >= 3 * len(operations), "every operation got several generated requests"
