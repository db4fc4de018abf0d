"""The REST service end to end on the bundled demo archive: real encoders, FAISS, graph and report writer.

The demo index is built through the API itself (a job), then searched, extended, written to
concurrently and given bad input; every error must be structured JSON with a 4xx status, and the
index must be intact afterwards.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from kgreport.api.service.app import create_app
from kgreport.generator.config import WriterConfig
from kgreport.retrieval.stores.local.write_lock import index_write_lock
from kgreport.testkit.bombs import bomb_jpeg, bomb_png
from kgreport.usecases import ingest
from kgreport.usecases.settings import Settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"
QUERY = DEMO / "queries" / "MPX1075_synpic20513.jpg"


def _png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(response, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return str(error["message"])


def _wait(client: TestClient, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _demo_cases(client: TestClient) -> int:
    return next(int(i["cases"]) for i in client.get("/v1/indexes").json()["indexes"] if i["name"] == "demo")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A service over a fresh data dir, with the demo index built through POST /v1/indexes."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("service"), max_upload_mb=2)
    with TestClient(create_app(settings)) as client:
        started = client.post("/v1/indexes", json={"name": "demo", "archive_path": str(DEMO)})
        assert started.status_code == 202, started.text
        job = _wait(client, started.json()["job"]["id"])
        assert job["state"] == "succeeded", job
        assert job["done"] == job["total"] == 60 and job["progress"] == 1.0
        yield client


def test_health_readiness_and_schema(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "worker_pid": os.getpid()}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    expected = "cuda" if torch.cuda.is_available() else "cpu"  # KGREPORT_DEVICE=auto: what this torch sees
    assert ready.json()["checks"]["device"].startswith(f"ok ({expected}")
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/indexes", "/v1/jobs/{job_id}", "/v1/search", "/v1/reports", "/v1/cases/{case_id}"):
        assert path in paths
    page = client.get("/")
    assert page.status_code == 200 and "Write draft report" in page.text


def test_search_by_image_and_text_with_thumbnails_and_cases(client: TestClient) -> None:
    indexes = client.get("/v1/indexes").json()["indexes"]
    assert ("demo", 60) in [(i["name"], i["cases"]) for i in indexes]

    result = client.post(
        "/v1/search", files={"image": (QUERY.name, QUERY.read_bytes(), "image/jpeg")}, data={"index": "demo", "k": "3"}
    ).json()
    assert len(result["hits"]) == 3 and result["predicted"]["modality"]
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)
    thumbnail = client.get(result["hits"][0]["thumbnail_url"])
    assert thumbnail.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumbnail.content)).size[0] <= 256
    case = client.get(result["hits"][0]["case_url"]).json()
    assert case["case_id"] == result["hits"][0]["case_id"] and case["report_text"]
    assert all("path" not in image for image in case["images"])

    text = client.post("/v1/search", json={"text": "axial CT of the chest with a lung mass", "k": 2}).json()
    assert len(text["hits"]) == 2
    mr_only = client.post(
        "/v1/search", files={"image": (QUERY.name, QUERY.read_bytes())}, data={"filters": '{"modality": "MR"}'}
    ).json()
    assert mr_only["hits"] and all(h["modality"] == "MR" for h in mr_only["hits"])

    preview = client.post("/v1/render", files={"image": ("q.jpg", QUERY.read_bytes())}, data={"size": "64"})
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).size[0] <= 64


def test_bad_input_gets_clear_4xx_errors(client: TestClient, tmp_path: Path) -> None:
    not_image = client.post("/v1/search", files={"image": ("notes.txt", b"hello, not an image")})
    assert "not a PNG, JPEG, DICOM or NIfTI" in _error(not_image, 415, "unsupported_media_type")

    too_big = client.post("/v1/search", files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 3_000_000)})
    _error(too_big, 413, "upload_too_large")

    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    truncated = client.post("/v1/search", files={"image": ("cut.dcm", dicom[: len(dicom) // 2])})
    _error(truncated, 422, "image_unreadable")

    unknown = client.post("/v1/search", json={"text": "mass", "index": "nope"})
    assert "nope" in _error(unknown, 404, "index_not_found")
    _error(client.post("/v1/search", json={"k": 3}), 422, "invalid_request")
    _error(
        client.post("/v1/search", content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )
    bad_filters = client.post("/v1/search", files={"image": ("q.jpg", QUERY.read_bytes())}, data={"filters": "[1]"})
    _error(bad_filters, 422, "bad_filters")
    _error(client.get("/v1/jobs/unknown"), 404, "job_not_found")
    # Hostile shapes that used to be 500s: filters nested 100,000 deep, a job id longer than a file name.
    deep = client.post("/v1/search", files={"image": ("q.jpg", QUERY.read_bytes())}, data={"filters": "[" * 100_000})
    _error(deep, 422, "bad_filters")
    deep_json = client.post(
        "/v1/search",
        content=b'{"text": "mass", "filters": ' + b"[" * 100_000 + b"}",
        headers={"content-type": "application/json"},
    )
    _error(deep_json, 422, "invalid_request")
    _error(client.get("/v1/jobs/" + "ab" * 5_000), 404, "job_not_found")
    # Small files that claim 13000 x 13000 pixels are refused from their header (KGREPORT_MAX_IMAGE_MEGAPIXELS).
    for bomb in (bomb_png(tmp_path / "big.png"), bomb_jpeg(tmp_path / "claims.jpg")):
        answer = client.post("/v1/search", files={"image": (bomb.name, bomb.read_bytes())}, data={"index": "demo"})
        assert answer.status_code == 422 and "13000 x 13000 pixels" in answer.text, answer.text
    _error(client.get("/v1/cases/NOPE?index=demo"), 404, "case_not_found")
    window = client.get("/v1/cases/MPX1427/thumbnail?index=demo&window=nope")  # a JPEG: a typo is still a typo
    assert "unknown window preset 'nope'" in _error(window, 422, "bad_request")
    _error(client.post("/v1/indexes", json={"name": "x", "archive_path": "/etc"}), 403, "archive_not_allowed")
    _error(client.post("/v1/indexes", json={"name": "../x", "archive_path": str(DEMO)}), 422, "invalid_id")
    from kgreport.retrieval.stores.local.store import CaseStore

    settings = client.app.state.kgreport.settings  # type: ignore[attr-defined]
    CaseStore.create(
        settings.index_dir("other"), image_dim=8, text_dim=384, image_encoder="other", text_encoder="all-MiniLM-L6-v2"
    ).close()
    mismatch = client.post("/v1/search", json={"text": "mass", "index": "other"})
    assert "8-d" in _error(mismatch, 409, "encoder_mismatch")
    assert _demo_cases(client) == 60, "the index is intact"


def test_add_delete_and_concurrent_writes(client: TestClient) -> None:
    def add(case_id: str):  # type: ignore[no-untyped-def]
        return client.post(
            "/v1/indexes/demo/cases",
            data={"case_id": case_id, "report": "Findings: Small right pleural effusion.\nImpression: Effusion."},
            files=[("images", ("a.png", _png(), "image/png")), ("images", ("b.png", _png(80), "image/png"))],
        )

    added = add("NEW-1")
    assert added.status_code == 201, added.text
    assert added.json()["cases_added"] == 1 and added.json()["images_added"] == 2
    _error(add("NEW-1"), 409, "case_exists")
    thumbnail = client.get("/v1/cases/NEW-1/thumbnail?index=demo&image_id=NEW-1/b.png")
    assert Image.open(io.BytesIO(thumbnail.content)).size == (80, 80)

    settings = client.app.state.kgreport.settings  # type: ignore[attr-defined]
    with index_write_lock(settings.index_dir("demo"), "demo"):  # another writer holds the index
        _error(add("NEW-2"), 409, "index_busy")
        _error(client.delete("/v1/indexes/demo/cases/NEW-1"), 409, "index_busy")
        # A build is refused at submission, not accepted and failed later in its job.
        _error(client.post("/v1/indexes", json={"name": "demo", "archive_path": str(DEMO)}), 409, "index_busy")
    empty = client.post(
        "/v1/indexes/demo/cases", data={"case_id": "NEW-3", "report": "  "}, files={"images": ("a.png", _png())}
    )
    _error(empty, 422, "bad_request")
    many = [("images", (f"{i}.png", _png(), "image/png")) for i in range(settings.max_images_per_case + 1)]
    over = client.post("/v1/indexes/demo/cases", data={"case_id": "NEW-4", "report": "Findings: x."}, files=many)
    assert "KGREPORT_MAX_IMAGES_PER_CASE" in _error(over, 422, "too_many_images")

    assert client.delete("/v1/indexes/demo/cases/NEW-1").json()["deleted"] == ["NEW-1"]
    _error(client.delete("/v1/indexes/demo/cases/NEW-1"), 404, "case_not_found")
    assert _demo_cases(client) == 60
    assert not any(p.is_file() for p in settings.query_uploads_dir.rglob("*")), "query uploads are removed"
    assert not any(
        n in p.name for p in settings.index_uploads_dir("demo").iterdir() for n in ("NEW-2", "NEW-3", "NEW-4")
    )
    assert not any("NEW-1" in p.name for p in settings.index_uploads_dir("demo").iterdir()), "its uploads go too"
    assert any(p.is_file() for p in DEMO.rglob("*.jpg")), "an archive's own files are never touched"


def test_one_id_rule_for_cases_patients_and_indexes(client: TestClient) -> None:
    def add(case_id: str, patient_id: str | None = None):  # type: ignore[no-untyped-def]
        data = {"case_id": case_id, "report": "Findings: Small right pleural effusion."}
        return client.post(
            "/v1/indexes/demo/cases",
            data=data if patient_id is None else {**data, "patient_id": patient_id},
            files={"images": ("a.png", _png(), "image/png")},
        )

    settings = client.app.state.kgreport.settings  # type: ignore[attr-defined]
    before = sorted(p.name for p in settings.index_uploads_dir("demo").iterdir())
    # Ids a URL segment, a file name or the graph would change: refused, never stored half-usable.
    for bad in ("a/b", ".", "..", "x\n", "nulA\x00B", "x" * 129, "with space"):
        assert "invalid case id" in _error(add(bad.encode().decode("unicode_escape")), 422, "invalid_id")
    assert "invalid patient id" in _error(add("OK-1", patient_id="p/1"), 422, "invalid_id")
    assert sorted(p.name for p in settings.index_uploads_dir("demo").iterdir()) == before, "nothing saved"
    _error(client.post("/v1/indexes", json={"name": "x\n", "archive_path": str(DEMO)}), 422, "invalid_id")
    _error(client.get("/v1/cases/.%2E?index=demo"), 422, "invalid_id")

    # Every id the rule allows can be added, fetched, shown and deleted over REST.
    assert add("NEW:2.a_b-c", patient_id="P:9").status_code == 201
    assert client.get("/v1/cases/NEW:2.a_b-c?index=demo").json()["patient_id"] == "P:9"
    assert client.get("/v1/cases/NEW:2.a_b-c/thumbnail?index=demo").headers["content-type"] == "image/png"
    assert client.delete("/v1/indexes/demo/cases/NEW:2.a_b-c").json()["deleted"] == ["NEW:2.a_b-c"]
    assert _demo_cases(client) == 60


def test_clients_never_see_server_paths(client: TestClient) -> None:
    settings = client.app.state.kgreport.settings  # type: ignore[attr-defined]
    secret = str(settings.data_dir.resolve())

    def clean(answer) -> dict:  # type: ignore[no-untyped-def]
        assert secret not in answer.text and str(REPO) not in answer.text, answer.text
        return dict(answer.json())

    listed = clean(client.get("/v1/indexes"))
    assert listed["indexes"] and all("path" not in i for i in listed["indexes"])
    found = clean(client.post("/v1/search", files={"image": ("my-scan.jpg", QUERY.read_bytes())}))
    assert found["query"] == "my-scan.jpg"
    assert (
        "index 'gone' not found"
        in clean(client.post("/v1/search", json={"text": "x", "index": "gone"}))["error"]["message"]
    )
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    cut = client.post(
        "/v1/indexes/demo/cases",
        data={"case_id": "CUT-1", "report": "Findings: effusion."},
        files={"images": ("cut.dcm", dicom[: len(dicom) // 2])},
    )
    assert cut.status_code == 422 and "cut.dcm" in clean(cut)["error"]["message"]
    refused = clean(client.post("/v1/indexes", json={"name": "x", "archive_path": "/etc"}))
    assert "/etc" in refused["error"]["message"], "the client's own path is echoed; the server's roots are not"
    case = clean(client.get("/v1/cases/NOPE?index=nowhere"))
    assert case["error"]["code"] == "index_not_found"


def _bundle_request(
    client: TestClient, name: str, manifest: bytes, images: list[Path], manifest_name: str = "cases.csv"
):  # type: ignore[no-untyped-def]
    files = [("manifest", (manifest_name, manifest, "text/csv"))]
    files += [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in images]
    return client.post("/v1/indexes", data={"name": name, "findings": "false"}, files=files)


def test_build_from_an_uploaded_manifest_and_its_images(client: TestClient) -> None:
    images = sorted((DEMO / "images").glob("*.jpg"))[:3]
    rows = [
        "case_id,images,report,modality",
        f"U-1,scans/{images[0].name},Findings: Right lower lobe consolidation. Impression: Pneumonia.,CT",
        f'U-2,"{images[1].name};{images[2].name}",Findings: No acute abnormality. Impression: Normal.,CT',
    ]
    manifest = "\n".join(rows).encode()
    settings = client.app.state.kgreport.settings  # type: ignore[attr-defined]
    bundles = settings.index_uploads_dir("uploaded")

    started = _bundle_request(client, "uploaded", manifest, images)
    assert started.status_code == 202, started.text
    job = _wait(client, started.json()["job"]["id"])
    assert job["state"] == "succeeded" and job["result"]["cases_added"] == 2 and job["result"]["images_added"] == 3
    case = client.get("/v1/cases/U-2?index=uploaded").json()
    assert len(case["images"]) == 2 and "Normal" in case["report"]["impression"]
    thumbnail = client.get(case["images"][0]["thumbnail_url"])
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size[0] <= 256
    kept = sorted(bundles.iterdir())
    assert len(kept) == 1, "the bundle stays: the index's cases point at its images"

    missing = _bundle_request(client, "uploaded-2", manifest, images[:2])
    assert images[2].name in _error(missing, 422, "images_missing")
    unused = _bundle_request(client, "uploaded-2", "\n".join(rows[:2]).encode(), images)
    assert images[1].name in _error(unused, 422, "images_unused")
    _error(_bundle_request(client, "uploaded-2", b"\xff\xfe\x00bad", images), 422, "manifest_unreadable")
    _error(_bundle_request(client, "uploaded-2", b"", images, "cases.jsonl"), 422, "manifest_empty")
    not_image = client.post(
        "/v1/indexes",
        data={"name": "uploaded-2"},
        files=[("manifest", ("m.csv", b"case_id,images,report\nX,a.txt,Findings: x.", "text/csv")),
               ("images", ("a.txt", b"not an image", "text/plain"))],
    )  # fmt: skip
    _error(not_image, 415, "unsupported_media_type")
    no_manifest = client.post("/v1/indexes", data={"name": "uploaded-2"}, files={"images": ("a.png", _png())})
    _error(no_manifest, 422, "invalid_request")
    _error(
        client.post("/v1/indexes", content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )
    refused = settings.index_uploads_dir("uploaded-2")
    assert not refused.exists() or not any(refused.iterdir()), "a refused upload leaves nothing behind"
    assert "uploaded-2" not in {i["name"] for i in client.get("/v1/indexes").json()["indexes"]}

    ingest.delete_index(client.app.state.kgreport.services, "uploaded")  # type: ignore[attr-defined]
    assert not bundles.exists(), "deleting an index removes the images uploaded for it"


def test_concepts(client: TestClient) -> None:
    concept = client.get("/v1/concepts/RID34539").json()  # pleural effusion
    assert concept["name"].lower() == "pleural effusion" and concept["ancestors"]
    assert "unknown" in _error(client.get("/v1/concepts/RID0"), 404, "concept_not_found").lower()
    assert client.get("/v1/concepts/RID34539?index=demo").status_code == 200


def test_an_unknown_index_is_404_in_every_index_parameter(client: TestClient) -> None:
    """Each route that takes `?index=` (or an index field) says the index is unknown, not that it is empty."""
    case_id = "MPX1427"  # a demo case: only the index is wrong
    for path in [f"/v1/cases/{case_id}?index=nosuch", f"/v1/cases/{case_id}/thumbnail?index=nosuch",
                 "/v1/concepts/RID34539?index=nosuch"]:  # fmt: skip
        assert "nosuch" in _error(client.get(path), 404, "index_not_found"), path
    _error(client.post("/v1/search", json={"text": "mass", "index": "nosuch"}), 404, "index_not_found")
    _error(client.get("/v1/concepts/RID34539?index=../x"), 422, "invalid_id")


def test_api_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys="k1, k2")
    with TestClient(create_app(settings)) as keyed:
        assert keyed.get("/healthz").status_code == 200
        _error(keyed.get("/v1/indexes"), 401, "missing_api_key")
        _error(keyed.get("/v1/indexes", headers={"X-API-Key": "wrong"}), 401, "invalid_api_key")
        assert keyed.get("/v1/indexes", headers={"X-API-Key": "k2"}).json() == {"indexes": []}


def test_report_with_citations_gate_and_evidence(client: TestClient) -> None:
    response = client.post("/v1/reports", files={"image": (QUERY.name, QUERY.read_bytes())}, data={"index": "demo"})
    assert response.status_code == 200, response.text
    body = response.json()
    report = body["report"]
    assert report["mode"] == "image" and report["evidence"]["cases"], "it names the prior cases it drew on"
    assert report["candidates"] and report["impression"]
    if report["abstained"]:  # no confident, supported draft: the similar cases instead, and why
        assert report["findings"] == [] and report["limitations"]
    else:
        assert 0.0 <= report["gate"] <= 1.0 and report["findings"] and report["draft"]["source"] == "case"
        assert all(s["supported"] for s in report["findings"]), "unsupported sentences are removed, and listed"
    cases = {c["case_id"] for c in report["evidence"]["cases"]}
    for sentence in report["findings"]:
        assert sentence["status"] in ("present", "absent", "uncertain", "none")  # none: states no finding
        assert set(sentence["cited_case_ids"]) <= cases
    for item in report["differential"]:  # the differential votes with more cases than the evidence shows
        assert item["name"] and all(client.get(f"/v1/cases/{c}", params={"index": "demo"}).status_code == 200
                                    for c in item["case_ids"])  # fmt: skip
    assert body["text"].startswith("Findings:") and body["seconds"] > 0
    writer_budget = WriterConfig.load(Settings().report_generator_dir).max_new_tokens
    assert report["model"]["max_new_tokens"] == writer_budget, "unless the request says, the writer's config decides"
    asked = client.post(
        "/v1/reports",
        files={"image": (QUERY.name, QUERY.read_bytes())},
        data={"index": "demo", "max_new_tokens": "24"},
    )
    assert asked.status_code == 200 and asked.json()["report"]["model"]["max_new_tokens"] == 24

    notes = "RUL 2cm spiculated nodule, no effusion, mediastinal LAD"
    response = client.post(
        "/v1/reports", files={"image": (QUERY.name, QUERY.read_bytes())}, data={"index": "demo", "notes": notes}
    )
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["mode"] == "notes" and report["draft"]["source"] == "notes"
    assert "right upper lobe" in report["draft"]["text"] and "lymphadenopathy" in report["draft"]["text"]
    stated = {s["status"] for s in report["findings"]}
    assert {"present", "absent"} <= stated, "the notes' finding and their negation both reach the report"
    # The differential blends three sources, with this case's weights, and says why the knowledge base offers each.
    weights = report["differential_weights"]
    assert set(weights) == {"image", "text", "knowledge"} and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    explained = [s for item in report["differential"] for s in item["supports"]]
    assert explained and all(s["source"].startswith("radiology-semantic-dict") and s["kb_finding"] for s in explained)
    assert all(set(item["sources"]) <= set(weights) for item in report["differential"])
    long_notes = "No pleural effusion. " * 5000  # 100 kB: cut to the limit, and the report says so
    response = client.post(
        "/v1/reports", files={"image": (QUERY.name, QUERY.read_bytes())}, data={"index": "demo", "notes": long_notes}
    )
    assert response.status_code == 200, response.text
    limitations = response.json()["report"]["limitations"]
    assert any(line.startswith("notes cut to 2000 of 104999 characters") for line in limitations), limitations
    _error(
        client.post(
            "/v1/reports", files={"image": (QUERY.name, QUERY.read_bytes())}, data={"index": "demo", "notes": " "}
        ),
        422,
        "bad_notes",
    )


def test_an_unexpected_error_is_json_500_and_closes_the_connection(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    def broken() -> None:
        raise RuntimeError("a defect, not bad input")

    app.add_api_route("/broken", broken)  # a route with a defect: what the catch-all is for
    answer = TestClient(app, raise_server_exceptions=False).get("/broken")
    assert answer.status_code == 500 and answer.headers["connection"] == "close"
    assert answer.json()["error"] == {
        "status": 500,
        "code": "internal_error",
        "message": "RuntimeError: the server failed on this request",
    }


def test_a_broken_index_is_listed_as_unreadable_and_never_hides_the_others(client: TestClient) -> None:
    settings = client.app.state.kgreport.settings  # type: ignore[attr-defined]
    demo = settings.index_dir("demo")
    broken = {name: settings.index_dir(name) for name in ("garbage", "corrupt", "emptied")}
    for root in broken.values():
        root.mkdir(parents=True)
    (broken["garbage"] / "manifest.json").write_text("{not json")
    (broken["garbage"] / "store.sqlite").write_bytes(b"")
    for name in ("corrupt", "emptied"):
        shutil.copy(demo / "manifest.json", broken[name] / "manifest.json")
    (broken["corrupt"] / "store.sqlite").write_bytes(b"this is not a database" * 100)
    for name in ("store.sqlite", "image.faiss", "text.faiss"):  # a crash or a careless copy emptied it
        (broken["emptied"] / name).write_bytes(b"" if name == "store.sqlite" else (demo / name).read_bytes())
    try:
        listed = client.get("/v1/indexes")
        assert listed.status_code == 200
        status = {i["name"]: i["status"] for i in listed.json()["indexes"]}
        assert status["demo"] == "ok" and _demo_cases(client) == 60
        assert "not a readable manifest" in status["garbage"]
        assert "not a readable SQLite database" in status["corrupt"]
        assert "store.sqlite" in status["emptied"] and "empty" in status["emptied"]
        for name in broken:
            answer = client.post("/v1/search", json={"text": "mass", "index": name})
            assert name in _error(answer, 503, "index_unreadable")
    finally:
        for root in broken.values():
            shutil.rmtree(root)
