"""Indexes built from a PACS over DICOMweb and kept in sync: a real Orthanc, real encoders, FAISS and SQLite.

The PACS starts with four CT studies: one with a text SR report, one whose report is in a sidecar table
(keyed by AccessionNumber), one with no report, and one whose SR is malformed. Then: a build, `index info
--json`, a sync after two more studies arrive, a sync killed mid-way and run again, a PACS that goes away
mid-build, wrong credentials (CLI and REST), a URL that is not DICOMweb, and the privacy of what is kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from kgreport.api.cli import app
from kgreport.testkit.pacs import make_ct_study, make_text_sr, running_orthanc

pytestmark = pytest.mark.slow
USER, PASSWORD = "kgreport", "Pacs-Secret-77"
runner = CliRunner()


@pytest.fixture(autouse=True)
def pacs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGREPORT_DICOMWEB_USERNAME", USER)
    monkeypatch.setenv("KGREPORT_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.setenv("KGREPORT_PATIENT_ID_SALT", "test-salt")
    for name in ("NO_PROXY", "no_proxy"):  # requests honours http_proxy; loopback must not go through one
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def _study(name: str, date: str, accession: str, patient: str = "PAT-REAL-1") -> list:
    return make_ct_study(study_date=date, accession_number=accession, patient_id=patient, slices=3)


def _malformed_sr(study_uid: str, date: str) -> object:
    sr = make_text_sr(study_uid, "Findings: irrelevant.", study_date=date, accession_number="ACC-D",
                      patient_id="PAT-REAL-1")  # fmt: skip
    del sr.ContentSequence  # an SR that holds no content tree
    return sr


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """Orthanc with basic auth and the four first studies; `uids` by name, `reports` a sidecar folder."""
    with running_orthanc(tmp_path / "orthanc", users={USER: PASSWORD}) as orthanc:
        studies = {
            "sr": _study("sr", "20240105", "ACC-A"),
            "table": _study("table", "20240110", "ACC-B"),
            "none": _study("none", "20240112", "ACC-C"),
            "bad_sr": _study("bad_sr", "20240114", "ACC-D"),
        }
        for datasets in studies.values():
            orthanc.upload_all(datasets)
        uids = {name: datasets[0].StudyInstanceUID for name, datasets in studies.items()}
        report = "Right lower lobe consolidation."
        orthanc.upload(make_text_sr(uids["sr"], report, study_date="20240105", accession_number="ACC-A",
                                    impression="Pneumonia.", patient_id="PAT-REAL-1"))  # fmt: skip
        orthanc.upload(_malformed_sr(uids["bad_sr"], "20240114"))
        reports = tmp_path / "reports"
        reports.mkdir()
        row = {"case_id": "ACC-B", "report": "Findings: Small left pleural effusion.\nImpression: Effusion."}
        (reports / "reports.jsonl").write_text(json.dumps(row) + "\n")
        yield SimpleNamespace(orthanc=orthanc, uids=uids, reports=reports, folder=tmp_path / "orthanc")


def _build(pacs: SimpleNamespace, *extra: str, url: str | None = None):  # type: ignore[no-untyped-def]
    args = ["index", "build", url or pacs.orthanc.dicomweb_url, "--name", "pacs", "--no-findings"]
    return runner.invoke(app, [*args, "--reports", str(pacs.reports), *extra])


def _summary(output: str) -> dict:
    """The JSON summary a build or sync prints after its progress bar."""
    return dict(json.loads(output[output.index("{") :]))


def _info() -> dict:
    shown = runner.invoke(app, ["index", "info", "pacs", "--json"])
    assert shown.exit_code == 0, shown.output
    return dict(json.loads(shown.output))


def test_build_info_and_sync(pacs: SimpleNamespace, data_dir: Path) -> None:
    built = _build(pacs)
    assert built.exit_code == 0, built.output
    result = _summary(built.output)
    assert result["cases_added"] == 4 and result["pacs"]["studies"] == 4
    assert result["pacs"]["report_sources"] == {"sr": 1, "table": 1, "none": 2}
    assert [p["study"] for p in result["pacs"]["report_problems"]] == [pacs.uids["bad_sr"]]

    info = _info()
    assert (info["cases"], info["cases_with_report"], info["cases_image_only"]) == (4, 2, 2)
    assert info["pacs"]["last_sync"] and info["pacs"]["latest_study_date"] == "20240114"
    assert "password" not in json.dumps(info).lower() and PASSWORD not in json.dumps(info)

    # The SR's text is the report; nothing identifying is kept.
    from kgreport.usecases.services import Services
    from kgreport.usecases.settings import Settings

    store = Services(Settings()).open_store("pacs")
    case = store.get_case(pacs.uids["sr"])
    assert case is not None and "consolidation" in case.report["findings"].lower()
    assert (case.patient_id or "").startswith("pid-") and "PAT-REAL-1" not in json.dumps(case.as_json())
    for path in (data_dir / "pacs" / "pacs" / "studies").rglob("*.dcm"):
        ds = dcmread(path)
        assert "PatientName" not in ds and "PatientBirthDate" not in ds and ds.PatientID.startswith("pid-")

    # Two more studies arrive; a sync adds exactly them, and a second sync adds nothing (nor forgets the first
    # studies: a sync lists only recent ones, but the index keeps its own query).
    for date, accession in (("20240201", "ACC-E"), ("20240202", "ACC-F")):
        pacs.orthanc.upload_all(_study("new", date, accession))
    synced = runner.invoke(app, ["index", "sync", "pacs", "--no-findings"])
    assert synced.exit_code == 0, synced.output
    assert _summary(synced.output)["cases_added"] == 2
    again = _summary(runner.invoke(app, ["index", "sync", "pacs", "--no-findings"]).output)
    assert again["cases_added"] == 0 and _info()["cases"] == 6
    assert again["pacs"]["no_longer_in_pacs"]["count"] == 0

    # A study deleted in the PACS is reported, and stays in the index.
    pacs.orthanc.delete_study(pacs.uids["none"])
    reported = _summary(runner.invoke(app, ["index", "sync", "pacs", "--no-findings"]).output)["pacs"]
    assert reported["no_longer_in_pacs"] == {"count": 1, "case_ids": [pacs.uids["none"]], "deleted": False}
    assert _info()["cases"] == 6

    # Deleting the index deletes the studies fetched for it (de-identified, but still patients' images).
    assert runner.invoke(app, ["index", "delete", "pacs", "--yes"]).exit_code == 0
    assert not (data_dir / "pacs" / "pacs").exists()


def test_a_sync_killed_midway_is_run_again_with_exact_counts(pacs: SimpleNamespace, data_dir: Path) -> None:
    assert _build(pacs).exit_code == 0
    new = [_study("new", f"202403{day:02d}", f"ACC-N{day}") for day in range(1, 7)]
    for datasets in new:
        pacs.orthanc.upload_all(datasets)
    env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "kgreport.api.cli", "index", "sync", "pacs", "--no-findings"]
    sync = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    studies = data_dir / "pacs" / "pacs" / "studies"
    first_new = studies / new[0][0].StudyInstanceUID
    deadline = time.monotonic() + 300
    while not first_new.exists() and sync.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling what the sync has written, not waiting for time to pass
    sync.send_signal(signal.SIGKILL)
    sync.wait()
    rerun = runner.invoke(app, ["index", "sync", "pacs", "--no-findings"])
    assert rerun.exit_code == 0, rerun.output
    info = _info()
    assert info["cases"] == 10 and info["images"] == 10, info  # 4 + 6, one volume each: none lost or doubled
    assert not list(studies.glob(".*.partial"))


def test_a_pacs_that_goes_away_mid_build_is_a_clear_error_and_resumable(pacs: SimpleNamespace, data_dir: Path) -> None:
    env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir)}
    args = [sys.executable, "-m", "kgreport.api.cli", "index", "build", pacs.orthanc.dicomweb_url, "--name", "pacs",
            "--no-findings", "--reports", str(pacs.reports)]  # fmt: skip
    build = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    studies = data_dir / "pacs" / "pacs" / "studies"
    deadline = time.monotonic() + 300
    while not (studies.exists() and any(studies.iterdir())) and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pacs.orthanc.kill()
    output, _ = build.communicate(timeout=300)
    assert build.returncode == 2 and "cannot reach the pacs" in output.lower() and PASSWORD not in output
    with running_orthanc(pacs.folder) as restarted:  # the same storage on a new port, without auth this time
        resumed = _build(pacs, url=restarted.dicomweb_url)
        assert resumed.exit_code == 0, resumed.output
        assert _info()["cases"] == 4


def test_wrong_credentials_and_a_url_that_is_not_dicomweb(
    pacs: SimpleNamespace, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KGREPORT_DICOMWEB_PASSWORD", "wrong")
    refused = _build(pacs)
    assert (
        refused.exit_code == 2
        and "wrong credentials" in refused.output
        and "wrong" not in refused.output.replace("wrong credentials", "")
    )
    monkeypatch.setenv("KGREPORT_DICOMWEB_PASSWORD", PASSWORD)
    not_dicomweb = _build(pacs, url=pacs.orthanc.dicomweb_url.replace("/dicom-web", "/app"))
    assert not_dicomweb.exit_code == 2 and "HTTP" in not_dicomweb.output
    assert not (data_dir / "indexes" / "pacs" / "store.sqlite").exists(), "nothing was built"

    from fastapi.testclient import TestClient

    from kgreport.api.service.app import create_app
    from kgreport.usecases.settings import Settings

    monkeypatch.setenv("KGREPORT_DICOMWEB_PASSWORD", "wrong")
    client = TestClient(create_app(Settings()))
    answer = client.post("/v1/indexes", json={"name": "pacs", "archive_path": pacs.orthanc.dicomweb_url})
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "pacs_auth_failed", answer.text


def test_a_rest_build_records_skipped_series_in_its_job(tmp_path: Path, data_dir: Path) -> None:
    """A series whose slices differ in size, and one with no pixel data, are skipped with their reasons in the
    job record; the study keeps its good series."""
    from fastapi.testclient import TestClient

    from kgreport.api.service.app import create_app
    from kgreport.usecases.settings import Settings

    good = _study("good", "20240301", "ACC-M")
    mixed = make_ct_study(good[0].StudyInstanceUID, study_date="20240301", accession_number="ACC-M",
                          patient_id="PAT-REAL-1", slices=3)  # fmt: skip
    small = mixed[1]
    small.Rows, small.Columns = 64, 64
    small.PixelData = small.pixel_array[:64, :64].copy().tobytes()
    no_pixels = make_ct_study(good[0].StudyInstanceUID, study_date="20240301", accession_number="ACC-M",
                              patient_id="PAT-REAL-1", slices=1)  # fmt: skip
    del no_pixels[0].PixelData
    with running_orthanc(tmp_path / "orthanc", users={USER: PASSWORD}) as orthanc:
        orthanc.upload_all([*good, *mixed, *no_pixels])
        client = TestClient(create_app(Settings()))
        started = client.post(
            "/v1/indexes", json={"name": "pacs", "archive_path": orthanc.dicomweb_url, "findings": False}
        )
        assert started.status_code == 202, started.text
        job_id = started.json()["job"]["id"]
        deadline = time.monotonic() + 600
        while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)  # polling the job's state, which is what a client does
    assert job["state"] == "succeeded", job
    reasons = " | ".join(s["reason"] for s in job["result"]["skipped"])
    assert "inconsistent slice sizes" in reasons and mixed[0].SeriesInstanceUID in reasons
    assert no_pixels[0].SeriesInstanceUID in reasons
    assert job["result"]["cases_added"] == 1 and job["result"]["image_only"] == 1
    assert job["result"]["pacs"]["report_sources"] == {"none": 1}
