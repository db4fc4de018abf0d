"""Two `kgreport serve` replicas with their own local data dirs, sharing a real Milvus (the case store), a
real FalkorDB server (the graph and the write leases) and a shared folder: they answer as one service.

Builds through one are searched through the other with identical hits; a delete through one is seen by the
other; a rebuild never interrupts the other's searches; two builds of one index submitted at once get one
202 and one 409; a replica killed mid-build leaves a build that the other resumes to exact counts; Milvus
stopped mid-search is a 503 that heals when it returns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kgreport.testkit.graph_server import FalkorDBServerProcess
from kgreport.testkit.milvus_server import MilvusUnderTest
from kgreport.testkit.servers import free_port
from tests.conftest import DEMO_ARCHIVE

pytestmark = [pytest.mark.milvus, pytest.mark.slow]

QUERY = DEMO_ARCHIVE / "queries" / "MPX1075_synpic20513.jpg"
LEASE_S = 3  # replicas' write leases run out this long after a replica dies
DEMO_CASES = 60


@dataclass
class Replica:
    """One `kgreport serve` process; `start` waits until it answers /healthz."""

    name: str
    env: dict[str, str]
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.folder / f"{self.name}.log").open("ab")
        cmd = [sys.executable, "-m", "kgreport.api.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._healthy(), 180, f"replica {self.name} did not start")

    def _healthy(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, (self.folder / f"{self.name}.log").read_text()[-3000:]
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=120, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=120)


def wait_for(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `ready` until it is true (readiness, not a fixed sleep); fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, milvus: MilvusUnderTest, falkordb_server: FalkorDBServerProcess
) -> Iterator[tuple[Replica, Replica]]:
    folder = tmp_path_factory.mktemp("replicas")
    shared = {
        **os.environ,
        "KGREPORT_CASE_STORE": milvus.url,
        "KGREPORT_FALKORDB_URL": falkordb_server.url,
        "KGREPORT_FALKORDB_PASSWORD": falkordb_server.password,
        "KGREPORT_SHARED_DIR": str(folder / "shared"),
        "KGREPORT_WRITE_LEASE_SECONDS": str(LEASE_S),
        "KGREPORT_MILVUS_TIMEOUT": "5",  # a search while Milvus is down fails within seconds
    }
    pair = tuple(Replica(n, {**shared, "KGREPORT_DATA_DIR": str(folder / n)}, folder) for n in ("a", "b"))
    try:
        for replica in pair:
            replica.start()
        yield pair  # type: ignore[misc]
    finally:
        for replica in pair:
            replica.stop()


def build(replica: Replica, name: str, limit: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "archive_path": str(DEMO_ARCHIVE)}
    if limit:
        body["limit"] = limit
    return replica.post("/v1/indexes", json=body)


def job_state(replica: Replica, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = replica.get(f"/v1/jobs/{job_id}").json()
    return job


def finished(replica: Replica, job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    wait_for(lambda: job_state(replica, job_id)["state"] not in ("queued", "running"), timeout_s, "job never ended")
    job = job_state(replica, job_id)
    assert job["state"] == "succeeded", job
    return job


def hits(replica: Replica, index: str) -> list[tuple[str, str, float]]:
    """Image search and text search of the index through `replica`, as comparable tuples."""
    with QUERY.open("rb") as image:
        by_image = replica.post("/v1/search", files={"image": (QUERY.name, image)}, data={"index": index, "k": "5"})
    by_text = replica.post("/v1/search", json={"text": "lung mass on chest CT", "index": index, "k": 5})
    assert by_image.status_code == 200 and by_text.status_code == 200, (by_image.text, by_text.text)
    return [(h["case_id"], h["image_id"], round(h["score"], 4)) for r in (by_image, by_text) for h in r.json()["hits"]]


def test_built_through_one_searched_and_deleted_through_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    submitted = build(a, "shared")
    assert submitted.status_code == 202, submitted.text
    finished(a, submitted.json()["job"]["id"])
    listed = {i["name"]: i for i in b.get("/v1/indexes").json()["indexes"]}
    assert listed["shared"]["cases"] == DEMO_CASES and listed["shared"]["backend"] == "milvus"
    seen_by_a, seen_by_b = hits(a, "shared"), hits(b, "shared")
    assert seen_by_a == seen_by_b and len(seen_by_a) == 10
    gone = seen_by_a[0][0]
    assert a.get(f"/v1/cases/{gone}?index=shared").status_code == 200
    assert httpx.delete(f"{a.url}/v1/indexes/shared/cases/{gone}", timeout=60).status_code == 200
    assert b.get(f"/v1/cases/{gone}?index=shared").status_code == 404  # at once: no wait, no retry
    assert gone not in {case_id for case_id, _, _ in hits(b, "shared")}
    unknown = b.post("/v1/search", json={"text": "mass", "index": "shared", "filters": {"scanner": "x"}})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_filter_field"


def test_a_rebuild_through_the_cli_never_interrupts_the_other_replicas_searches(
    replicas: tuple[Replica, Replica], milvus: MilvusUnderTest
) -> None:
    a, b = replicas
    before = hits(b, "shared")
    answers: list[int] = []
    rebuilt = threading.Event()

    def search_until_rebuilt() -> None:
        while not rebuilt.is_set() or len(answers) < 3:
            answers.append(b.post("/v1/search", json={"text": "lung mass", "index": "shared", "k": 3}).status_code)

    cli_env = {**a.env, "KGREPORT_DATA_DIR": str(a.folder / "cli")}
    with ThreadPoolExecutor(1) as pool:
        searching = pool.submit(search_until_rebuilt)
        try:
            rebuild = subprocess.run(
                [sys.executable, "-m", "kgreport.api.cli", "index", "rebuild", "shared"],
                env=cli_env,
                capture_output=True,
            )
        finally:
            rebuilt.set()
        searching.result()
    assert rebuild.returncode == 0, rebuild.stderr.decode()[-3000:]
    assert set(answers) == {200}, answers
    assert hits(b, "shared") == before  # the same encoders: the same hits, from the new copy
    from pymilvus import MilvusClient

    from kgreport.retrieval.stores.milvus.connection import collection_base

    base = collection_base("shared")
    client = MilvusClient(uri=milvus.url.replace("milvus://", "http://"))
    try:
        left = [c for c in client.list_collections() if c.startswith(base + "_")]
    finally:
        client.close()
    assert len(left) == 2, left  # the replaced copy was dropped once replicas had moved off it


def test_two_builds_of_one_index_at_once_get_one_202_and_one_409(replicas: tuple[Replica, Replica]) -> None:
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda r: build(r, "race", limit=6), replicas))
    assert sorted(r.status_code for r in answers) == [202, 409], [r.text for r in answers]
    accepted = next(r for r in answers if r.status_code == 202)
    winner = replicas[answers.index(accepted)]
    finished(winner, accepted.json()["job"]["id"])
    assert [r.json()["error"]["code"] for r in answers if r.status_code == 409] == ["index_busy"]


def test_a_build_cut_by_kill_9_is_resumed_through_the_other_replica(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    submitted = build(a, "resumed")
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job"]["id"]
    wait_for(lambda: job_state(a, job_id)["done"] >= 12, 600, "the build made no progress")
    a.kill()
    try:
        assert b.get(f"/v1/jobs/{job_id}").json()["state"] == "interrupted"  # same host: its process is gone
        # The dead replica's lease runs out within LEASE_S; until then the index is busy.
        answers: list[httpx.Response] = []
        wait_for(lambda: answers.append(build(b, "resumed")) or answers[-1].status_code == 202, 60, "lease never freed")
        assert {r.status_code for r in answers[:-1]} <= {409}
        result = finished(b, answers[-1].json()["job"]["id"])["result"]
        assert result["cases_already_present"] + result["cases_added"] == DEMO_CASES, result
        info = {i["name"]: i for i in b.get("/v1/indexes").json()["indexes"]}["resumed"]
        shared = {i["name"]: i for i in b.get("/v1/indexes").json()["indexes"]}["shared"]
        assert info["cases"] == DEMO_CASES and info["images"] == shared["images"] + 1  # `shared` lost one case
    finally:
        a.start()


def test_milvus_stopped_mid_search_is_a_503_that_heals(
    replicas: tuple[Replica, Replica], milvus: MilvusUnderTest
) -> None:
    _, b = replicas
    query = {"text": "lung mass", "index": "shared", "k": 3}
    assert b.post("/v1/search", json=query).status_code == 200
    indexes = b.get("/v1/indexes").json()["indexes"]
    milvus.stop()
    try:
        down = b.post("/v1/search", json=query)
        assert down.status_code == 503 and down.json()["error"]["code"] == "case_store_unavailable", down.text
        assert milvus.url in down.json()["error"]["message"]
        assert b.get("/readyz").status_code == 503
    finally:
        milvus.start()
    wait_for(lambda: b.post("/v1/search", json=query).status_code == 200, 300, "the replica did not recover")
    assert b.get("/readyz").status_code == 200
    # Every index written before the restart is there after it, at the same generation (the registry
    # once lost an upserted row across a restart: retrieval/stores/milvus/registry.py).
    assert b.get("/v1/indexes").json()["indexes"] == indexes


def test_an_unreachable_milvus_is_a_clear_error(tmp_path: Path) -> None:
    from kgreport.api.service.app import create_app
    from kgreport.usecases.settings import Settings

    unreachable = "milvus://127.0.0.1:1"
    env = {**os.environ, "KGREPORT_DATA_DIR": str(tmp_path / "kg"), "KGREPORT_CASE_STORE": unreachable,
           "KGREPORT_MILVUS_TIMEOUT": "2"}  # fmt: skip
    cli = subprocess.run(
        [sys.executable, "-m", "kgreport.api.cli", "index", "info", "demo"], env=env, capture_output=True
    )
    assert cli.returncode == 2 and unreachable in cli.stderr.decode() + cli.stdout.decode()
    settings = Settings(data_dir=tmp_path / "kg", case_store=unreachable, milvus_timeout=2)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503 and unreachable in ready.json()["checks"]["case_store"]
