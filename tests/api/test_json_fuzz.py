"""A fuzzer over the JSON body of every JSON route: whatever a client sends, a 4xx JSON error or a result,
never a 5xx.

Where `test_schema_fuzz.py` sends what the schema allows, this sends what it does not: any JSON value as
the body, a valid body with one field replaced by any JSON value (huge integers, NaN and Infinity tokens,
nesting, unicode), a field removed or added, and raw texts no JSON encoder writes (100,000-deep nesting, a
5,000-digit number, lone surrogates, duplicate keys, a BOM, trailing bytes). Hypothesis draws the bodies
with a fixed seed (`derandomize`), so a run is repeatable; the routes come from the live OpenAPI schema,
so a new JSON route is fuzzed (and must be given a valid body below) without editing the loop. Each
route also gets every field set to every value of EDGES in turn (a bounded, exhaustive pass), since a
random draw may miss the one value that breaks a field.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgreport.api.service.app import create_app
from kgreport.json_types import Json
from kgreport.usecases.ingest import IngestRequest, ingest_archive
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
VALID = {  # one valid body per JSON route: the fuzzer's starting point
    "POST /v1/search": {"text": "lung mass", "index": "demo", "k": 3, "filters": {"modality": "CT"}},
    # no such archive: a body the fuzzer leaves valid is a 404, never a build started
    "POST /v1/indexes": {"name": "fuzz", "archive_path": str(DEMO / "no-such-archive"), "format": "medpix"},
}
RAW = [
    b"",
    b"\xef\xbb\xbf{}",
    b'{"text": "x"} trailing',
    b'{"text": "x", "text": 5}',
    b'{"text": "\\ud800"}',
    b'{"text": "x", "k": ' + b"9" * 5000 + b"}",
    b'{"text": "x", "k": NaN}',
    b'{"text": "x", "k": -Infinity}',
    b'{"text": "x", "k": 1e999}',
    b'{"text": "x", "filters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"text": "x", "filters": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
    b'{"name": "x", "archive_path": ' + b"[" * 100_000 + b"}",
    b"\x00\x01\x02",
    '{"text": "\u202e\u0000中"}'.encode(),
]
EDGES: list[Json] = [
    None, True, 0, -1, 10**400, 1.5, float("nan"), float("inf"), "", " ", "demo", "CT", "../x", "a\x00b",
    "~nosuchuser/x", "dicomweb+http://[::1", "dicomweb+http://h:99999/rs", "x" * 5000, "\ud800", [], {},
    ["x"] * 2000, {f"k{i}": "v" for i in range(2000)}, [[[[[]]]]],
]  # fmt: skip
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(EDGES)
)
values: st.SearchStrategy[Json] = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)  # fmt: skip


def edge_bodies(valid: dict[str, Json]) -> Iterator[bytes]:
    """Every field of `valid` set to every value of EDGES in turn: the cases a random draw may miss."""
    for key in sorted(valid):
        for edge in EDGES:
            yield json.dumps({**valid, key: edge}, allow_nan=True).encode()
    yield from RAW


def bodies(valid: dict[str, Json]) -> st.SearchStrategy[bytes]:
    """Raw bodies for a route whose valid body is `valid`."""
    keys = sorted(valid)
    replaced = st.tuples(st.sampled_from(keys), values).map(lambda kv: {**valid, kv[0]: kv[1]})
    removed = st.sampled_from(keys).map(lambda key: {k: v for k, v in valid.items() if k != key})
    added = st.tuples(st.text(max_size=12), values).map(lambda kv: {**valid, kv[0]: kv[1]})
    documents = values | replaced | removed | added | st.just(valid)
    return documents.map(lambda d: json.dumps(d, allow_nan=True).encode()) | st.sampled_from(RAW)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service over a 3-case demo index, answering every failure as a response (a 500 included)."""
    config = Settings(data_dir=tmp_path_factory.mktemp("json-fuzz"), max_upload_mb=1)
    services = Services(config)
    ingest_archive(services, IngestRequest("demo", DEMO, limit=3, findings=False))
    services.close()
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        yield test_client


def json_routes(client: TestClient) -> list[str]:
    """ "METHOD /path" of every operation whose request body may be JSON."""
    schema = client.get("/openapi.json").json()
    return sorted(
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    )


def fuzz(client: TestClient, route: str) -> Counter[int]:
    """Send `route` the edge bodies, then 150 drawn ones; assert each answer; count the statuses."""
    method, path = route.split(" ", 1)
    statuses: Counter[int] = Counter()

    def send(body: bytes) -> None:
        answer = client.request(method, path, content=body, headers={"content-type": "application/json"})
        statuses[answer.status_code] += 1
        assert answer.status_code < 500, f"{route} {body[:200]!r}: {answer.status_code} {answer.text[:300]}"
        if answer.status_code >= 400:
            assert answer.json()["error"]["code"], answer.text

    @given(body=bodies(VALID[route]))
    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def drawn(body: bytes) -> None:
        send(body)

    for body in edge_bodies(VALID[route]):
        send(body)
    drawn()
    return statuses


def test_every_json_route_answers_fuzzed_bodies_without_a_server_error(client: TestClient) -> None:
    routes = json_routes(client)
    assert routes == sorted(VALID), f"give each JSON route a valid body in VALID: {routes}"
    for route in routes:
        statuses = fuzz(client, route)
        assert sum(statuses.values()) >= 150 + len(RAW) and 422 in statuses, (route, statuses)
        assert len(statuses) >= 2, f"{route}: the fuzzer reached one answer only ({statuses})"
