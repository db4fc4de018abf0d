"""`indexing.pacs.client` against a real Orthanc (DICOMweb plugin) and against servers that are not DICOMweb.

One Orthanc with basic auth serves the module: five studies (three CT studies on different dates, one
of them with an SR report, and a study holding only an SR). Failure tests use their own servers: a
second Orthanc that is killed, a closed port, and tiny `http.server`s answering HTML, other JSON,
errors or nothing in time. Every error must be a `PacsError` subclass naming the URL, never carrying
the password.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import SecretStr

from kgreport.indexing.archives.base import ArchiveError
from kgreport.indexing.pacs.client import (
    DicomWebSource,
    PacsCredentials,
    SeriesRef,
    StudyRef,
    parse_pacs_url,
    redacted,
)
from kgreport.indexing.pacs.errors import (
    NotDicomWebError,
    PacsAuthError,
    PacsError,
    PacsUnavailableError,
    PacsUrlError,
)
from kgreport.testkit.pacs import free_port, make_ct_study, make_text_sr, running_orthanc

USER, PASSWORD = "kgreport", "Correct-Horse-Battery-9"
GOOD = PacsCredentials(username=USER, password=PASSWORD, timeout=10)


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours http_proxy; a CI proxy must not sit between the client and the loopback servers."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Orthanc with basic auth and five studies; `ct` maps a name to the uploaded CT datasets."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), users={USER: PASSWORD}) as orthanc:
        ct = {
            "a": make_ct_study(slices=3, study_date="20230105", accession_number="ACC-A", patient_id="P1"),
            "b": make_ct_study(slices=2, study_date="20230610", accession_number="ACC-B", patient_id="P2"),
            "c": make_ct_study(slices=2, study_date="20240301", accession_number="ACC-C", patient_id="P1"),
        }
        for datasets in ct.values():
            orthanc.upload_all(datasets)
        a_uid = ct["a"][0].StudyInstanceUID
        sr = make_text_sr(
            a_uid,
            "No focal consolidation.",
            impression="Normal chest CT.",
            study_date="20230105",
            accession_number="ACC-A",
        )
        sr.PatientID = "P1"
        orthanc.upload(sr)
        e_uid = "1.2.826.0.1.3680043.8.498.1000001"
        orthanc.upload(make_text_sr(e_uid, "Outside report.", study_date="20220101", accession_number="ACC-E"))
        uids = {name: datasets[0].StudyInstanceUID for name, datasets in ct.items()} | {"e": e_uid}
        yield SimpleNamespace(orthanc=orthanc, ct=ct, sr=sr, uids=uids)


def source(pacs: SimpleNamespace, credentials: PacsCredentials = GOOD, **kwargs: object) -> DicomWebSource:
    return DicomWebSource(pacs.orthanc.dicomweb_url, credentials, **kwargs)  # type: ignore[arg-type]


def assert_no_secret(err: BaseException, *secrets: str) -> None:
    """Neither the message nor the whole traceback (causes included) carries a secret."""
    text = str(err) + "".join(traceback.format_exception(err))
    for secret in (PASSWORD, *secrets):
        assert secret not in text


# --- a real PACS -----------------------------------------------------------------------------------


def test_probe_and_study_records(pacs: SimpleNamespace) -> None:
    pacs_source = source(pacs)
    pacs_source.probe()
    studies = {ref.study_uid: ref for ref in pacs_source.studies()}
    assert set(studies) == set(pacs.uids.values())
    a = studies[pacs.uids["a"]]
    assert (a.study_date, a.accession_number, a.patient_id) == ("20230105", "ACC-A", "P1")
    assert set(a.modalities) == {"CT", "SR"}
    assert studies[pacs.uids["e"]].modalities == ("SR",)


def test_date_and_modality_filters(pacs: SimpleNamespace) -> None:
    pacs_source = source(pacs)
    uids = pacs.uids

    def listed(**filters: str) -> set[str]:
        return {ref.study_uid for ref in pacs_source.studies(**filters)}  # type: ignore[arg-type]

    assert listed(since="20230601") == {uids["b"], uids["c"]}
    assert listed(since="2023-01-01", until="2023-12-31") == {uids["a"], uids["b"]}
    assert listed(until="20221231") == {uids["e"]}
    assert listed(modality="SR") == {uids["a"], uids["e"]}
    assert listed(modality="ct", since="20230601") == {uids["b"], uids["c"]}
    assert listed(modality="MR") == set()
    # Bad arguments fail when called, before any request (not on first iteration).
    with pytest.raises(ValueError, match="not YYYYMMDD"):
        pacs_source.studies(since="last week")
    with pytest.raises(ValueError, match="after"):
        pacs_source.studies(since="20240101", until="20230101")
    with pytest.raises(ValueError, match="modality"):
        pacs_source.studies(modality="CT&x=1")
    with pytest.raises(ValueError, match="page_size"):
        pacs_source.studies(page_size=0)


def test_paging_in_short_pages(pacs: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    pacs_source = source(pacs)
    client = pacs_source._client
    asked: list[tuple[int, int]] = []
    search = client.search_for_studies

    def spy(**kwargs: object) -> object:
        asked.append((kwargs["offset"], kwargs["limit"]))  # type: ignore[arg-type]
        return search(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "search_for_studies", spy)
    refs = list(pacs_source.studies(page_size=2))
    assert sorted(ref.study_uid for ref in refs) == sorted(pacs.uids.values())  # each study once
    assert asked == [(0, 2), (2, 2), (4, 2)]  # the third page (1 study) is short: the end


def test_series_and_instances_round_trip(pacs: SimpleNamespace) -> None:
    pacs_source = source(pacs)
    series = pacs_source.series(pacs.uids["a"])
    by_modality = {ref.modality: ref for ref in series}
    assert set(by_modality) == {"CT", "SR"}
    ct_ref = by_modality["CT"]
    assert ct_ref == SeriesRef(pacs.ct["a"][0].SeriesInstanceUID, "CT", 3, "CT chest")

    instances = pacs_source.instances(pacs.uids["a"], ct_ref.series_uid)
    assert [int(ds.InstanceNumber) for ds in instances] == [1, 2, 3]
    for got, sent in zip(instances, pacs.ct["a"], strict=True):
        assert got.SOPInstanceUID == sent.SOPInstanceUID
        assert np.array_equal(got.pixel_array, sent.pixel_array)  # pixel data intact, slice by slice
        assert [float(v) for v in got.ImagePositionPatient] == [float(v) for v in sent.ImagePositionPatient]

    (report,) = pacs_source.instances(pacs.uids["a"], by_modality["SR"].series_uid)
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11"
    findings, impression = report.ContentSequence
    assert findings.ValueType == "CONTAINER"
    assert findings.ContentSequence[0].TextValue == "No focal consolidation."
    assert impression.TextValue == "Normal chest CT."


def test_unknown_series_is_a_pacs_error(pacs: SimpleNamespace) -> None:
    with pytest.raises(PacsError) as caught:
        source(pacs).instances(pacs.uids["a"], "1.2.3.4.5.6.7")
    assert pacs.orthanc.url in str(caught.value)
    with pytest.raises(PacsError, match="retrieve series"):
        source(pacs).instances(pacs.uids["a"], "not a uid")


# --- credentials ------------------------------------------------------------------------------------


def test_wrong_credentials(pacs: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = PacsCredentials(username=USER, password="Wrong-Password-42")
    with pytest.raises(PacsAuthError, match="wrong credentials for PACS at http://127.0.0.1") as caught:
        source(pacs, wrong).probe()
    assert isinstance(caught.value, ArchiveError)
    assert_no_secret(caught.value, "Wrong-Password-42")
    with pytest.raises(PacsAuthError, match="wrong credentials"):
        list(source(pacs, PacsCredentials(token="Bearer-Token-1234")).studies())
    with pytest.raises(PacsAuthError, match="KGREPORT_DICOMWEB_USERNAME"):  # none given: say where they go
        source(pacs, PacsCredentials()).probe()
    assert "Wrong-Password-42" not in caplog.text and PASSWORD not in caplog.text
    assert PASSWORD not in repr(GOOD) and PASSWORD not in repr(source(pacs))


def test_credentials_in_url_refused() -> None:
    for url in ("dicomweb+http://alice:Secret-Pw-77@127.0.0.1:8042/dicom-web", "https://alice@pacs.example.org/rs"):
        with pytest.raises(PacsUrlError, match="KGREPORT_DICOMWEB_PASSWORD") as caught:
            DicomWebSource(url, PacsCredentials())
        assert "Secret-Pw-77" not in str(caught.value) and "alice" not in str(caught.value)
    assert redacted("dicomweb+https://a:b@pacs:443/rs?token=x") == "dicomweb+https://***@pacs:443/rs?***"


def test_credentials_from_settings() -> None:
    settings = SimpleNamespace(
        dicomweb_username="u",
        dicomweb_password=SecretStr("pw"),
        dicomweb_token=SecretStr(""),
        dicomweb_verify_tls=True,
        dicomweb_ca_bundle="",
        dicomweb_timeout=12.0,
    )
    creds = PacsCredentials.from_settings(settings)
    assert creds == PacsCredentials("u", "pw", None, True, None, 12.0)
    with pytest.raises(PacsError, match="not both"):
        DicomWebSource("dicomweb+http://127.0.0.1:1/rs", PacsCredentials("u", "pw", "tok"))
    with pytest.raises(PacsError, match="both a user and a password"):
        DicomWebSource("dicomweb+http://127.0.0.1:1/rs", PacsCredentials(username="u"))
    with pytest.raises(PacsError, match="CA bundle"):
        DicomWebSource("dicomweb+https://127.0.0.1:1/rs", PacsCredentials(ca_bundle="/nonexistent/ca.pem"))


def test_parse_pacs_url() -> None:
    assert parse_pacs_url("dicomweb+https://pacs.example.org/dicom-web/") == "https://pacs.example.org/dicom-web"
    assert parse_pacs_url("dicomweb+http://127.0.0.1:8042/dicom-web") == "http://127.0.0.1:8042/dicom-web"
    assert parse_pacs_url("https://pacs:8443/rs") == "https://pacs:8443/rs"
    for bad in ("ftp://pacs/rs", "dicomweb+http:///rs", "http://pacs:99999/rs", "http://pacs/rs?x=1", "pacs/rs",
                "dicomweb+http://[::1"):  # fmt: skip
        with pytest.raises(PacsUrlError) as caught:  # the request's fault (422), not the PACS's (502)
            parse_pacs_url(bad)
        assert not isinstance(caught.value, PacsError)


# --- servers that are not (or no longer) a DICOMweb PACS -----------------------------------------------


def test_nothing_listening() -> None:
    """With the default 3 tries (refused at once, then after 1 s and 2 s of back-off)."""
    url = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(PacsUnavailableError, match="cannot reach the PACS at http://127.0.0.1") as caught:
        DicomWebSource(url, GOOD).probe()
    assert url.removeprefix("dicomweb+") in str(caught.value)
    assert_no_secret(caught.value)


def test_pacs_killed_mid_build(tmp_path: Path) -> None:
    with running_orthanc(tmp_path / "orthanc", users={USER: PASSWORD}) as orthanc:
        datasets = make_ct_study(slices=2)
        orthanc.upload_all(datasets)
        pacs_source = DicomWebSource(orthanc.dicomweb_url, GOOD, max_attempts=1)
        studies = pacs_source.studies(page_size=1)
        first = next(studies)
        orthanc.kill()
        with pytest.raises(PacsUnavailableError, match=orthanc.url):
            pacs_source.series(first.study_uid)
        with pytest.raises(PacsUnavailableError):
            pacs_source.instances(first.study_uid, datasets[0].SeriesInstanceUID)


def test_orthanc_rest_root_is_not_dicomweb(pacs: SimpleNamespace) -> None:
    """The REST API root (the `/dicom-web` path forgotten) answers 400 to `studies?limit=1`."""
    with pytest.raises(NotDicomWebError, match=r"HTTP 400 .*Missing") as caught:
        DicomWebSource("dicomweb+" + pacs.orthanc.url, GOOD).probe()
    assert pacs.orthanc.url in str(caught.value)
    with pytest.raises(NotDicomWebError, match="HTTP 404"):
        DicomWebSource(pacs.orthanc.dicomweb_url + "/nope", GOOD).probe()


class Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's `answer` (status, content type, body) after its `delay`."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        status, content_type, body, delay = self.server.answer  # type: ignore[attr-defined]
        time.sleep(delay)
        # Echo the Authorization header into the body: it must never reach an error message.
        payload = body.replace(b"{auth}", (self.headers.get("Authorization") or "").encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have timed out and gone
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def answering(status: int, content_type: str, body: bytes, delay: float = 0.0) -> Iterator[str]:
    """A loopback HTTP server giving one fixed answer; yields its dicomweb+http URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.daemon_threads = True
    server.answer = (status, content_type, body, delay)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"dicomweb+http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def test_html_server_is_not_dicomweb() -> None:
    html = b"<html><body>{auth} Welcome to the hospital intranet</body></html>"
    with answering(200, "text/html; charset=utf-8", html) as url, pytest.raises(NotDicomWebError) as caught:
        DicomWebSource(url, GOOD).probe()
    message = str(caught.value)
    assert url.removeprefix("dicomweb+") in message
    assert "HTTP 200 (text/html; charset=utf-8, Server: BaseHTTP" in message and "<html><body>" in message
    assert "Basic ***" in message  # the echoed header, scrubbed
    assert_no_secret(caught.value)


@pytest.mark.parametrize(
    ("status", "content_type", "body", "error", "words"),
    [
        (200, "application/json", b'["7e3c2d4a-0001", "7e3c2d4a-0002"]', NotDicomWebError, "application/json"),
        (200, "application/dicom+json", b'{"status": "ok"}', NotDicomWebError, "HTTP 200"),
        (404, "text/plain", b"no such thing", NotDicomWebError, r"HTTP 404 \(text/plain"),
        (500, "text/plain", b"database down", PacsUnavailableError, "database down"),
        (503, "text/plain", b"maintenance", PacsUnavailableError, "HTTP 503"),
    ],
)
def test_other_answers(status: int, content_type: str, body: bytes, error: type[PacsError], words: str) -> None:
    with answering(status, content_type, body) as url, pytest.raises(error, match=words) as caught:
        DicomWebSource(url, GOOD, max_attempts=1).probe()
    assert type(caught.value) is error
    assert_no_secret(caught.value)


def test_sparse_dicom_json() -> None:
    """Missing or odd attributes read as None; a study without its UID is skipped, not a crash."""
    body = (
        b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00080020": {"vr": "DA"},'
        b' "00080061": {"vr": "CS", "Value": ["CT", null, "CT", "MR"]}, "00100020": {"vr": "LO", "Value": [{"x": 1}]}},'
        b' {"00080050": {"vr": "SH", "Value": ["ACC-9"]}}]'
    )
    with answering(200, "application/dicom+json", body) as url:
        (ref,) = DicomWebSource(url, GOOD).studies()
    assert ref == StudyRef("1.2.3", None, None, ("CT", "MR"), None)


def test_no_answer_in_time() -> None:
    slow = PacsCredentials(username=USER, password=PASSWORD, timeout=0.3)
    with (
        answering(200, "application/dicom+json", b"[]", delay=2.0) as url,
        pytest.raises(PacsUnavailableError) as caught,
    ):
        DicomWebSource(url, slow, max_attempts=1).probe()
    assert "did not answer within 0.3 s" in str(caught.value)
