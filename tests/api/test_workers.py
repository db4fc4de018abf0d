"""`kgreport serve --workers 2`: two real worker processes over one data dir answer as one service.

Each worker loads its own models and holds its own FAISS copy of an index; a case added through one
must be found by the other, and a build job run by one must be reported by either. Requests go out on
fresh connections, so both workers answer some (each response's worker is known from `/healthz` on the
same connection).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kgreport.testkit.servers import free_port
from kgreport.usecases.ingest import IngestRequest, ingest_archive
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "data" / "demo" / "queries" / "MPX1075_synpic20513.jpg"
REPORT = "Findings: A spiculated mass in the right upper lobe.\nImpression: Suspicious for carcinoma."


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("workers")
    services = Services(Settings(data_dir=data_dir))
    ingest_archive(services, IngestRequest("demo", REPO / "data" / "demo", limit=8, findings=False))
    services.close()
    port = free_port()
    env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "kgreport.api.cli", "serve", "--port", str(port), "--workers", "2"]
    log = (data_dir / "serve.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, (data_dir / "serve.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(60)
    log.close()


def _on_each_worker(url: str, call, limit_s: float = 120) -> dict[int, list]:  # type: ignore[no-untyped-def,type-arg]
    """`call(client)` on fresh connections, four at a time (an idle pair of workers may leave a lone
    connection to the same one each time), until both workers have answered at least twice."""

    def one() -> tuple[int, object]:
        with httpx.Client(base_url=url, timeout=120) as client:  # a new connection: either worker may take it
            return client.get("/healthz").json()["worker_pid"], call(client)

    answers: dict[int, list] = {}  # type: ignore[type-arg]
    deadline = time.monotonic() + limit_s
    with ThreadPoolExecutor(4) as pool:
        while len(answers) < 2 or min(len(v) for v in answers.values()) < 2:
            assert time.monotonic() < deadline, f"only workers {sorted(answers)} answered"
            for pid, answer in pool.map(lambda _: one(), range(4)):
                answers.setdefault(pid, []).append(answer)
    return answers


def _search_new_case(client: httpx.Client) -> list[str]:
    body = {"text": "spiculated lung mass", "k": 3, "filters": {"case_id": "NEW-1"}}
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    return [hit["case_id"] for hit in response.json()["hits"]]


def test_a_case_added_through_one_worker_is_found_by_both(base: str) -> None:
    # Both workers open the index (and load its FAISS copy) before the case exists.
    assert all(r == [] for results in _on_each_worker(base, _search_new_case).values() for r in results)
    added = httpx.post(
        base + "/v1/indexes/demo/cases",
        data={"case_id": "NEW-1", "report": REPORT},
        files={"images": (IMAGE.name, IMAGE.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert added.status_code == 201, added.text
    for pid, results in _on_each_worker(base, _search_new_case).items():
        assert all(r == ["NEW-1"] for r in results), f"worker {pid} does not see the new case: {results}"

    assert httpx.delete(base + "/v1/indexes/demo/cases/NEW-1", timeout=60).status_code == 200
    for pid, results in _on_each_worker(base, _search_new_case).items():
        assert all(r == [] for r in results), f"worker {pid} still finds the deleted case: {results}"


def test_a_build_job_is_reported_by_either_worker(base: str) -> None:
    submitted = httpx.post(
        base + "/v1/indexes",
        json={"name": "second", "archive_path": str(REPO / "data" / "demo"), "limit": 4, "findings": False},
        timeout=60,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job"]["id"]

    def state(client: httpx.Client) -> str:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["state"])

    deadline = time.monotonic() + 180
    while True:
        states = [s for answers in _on_each_worker(base, state).values() for s in answers]
        assert "failed" not in states and "interrupted" not in states, states
        if all(s == "succeeded" for s in states[-4:]):
            break
        assert time.monotonic() < deadline, f"the job never finished: {states}"
        time.sleep(0.5)
