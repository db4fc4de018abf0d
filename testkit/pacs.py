"""A real PACS for tests: Orthanc with its DICOMweb plugin, plus DICOM studies to put in it.

`running_orthanc` starts Debian's Orthanc (`apt-get install orthanc orthanc-dicomweb`; `make test`
installs both) on free loopback ports with its storage in a test folder, waits until its REST API
answers, and stops it afterwards. Tests then talk DICOMweb to it exactly as they would to a
hospital PACS. `make_ct_study` and `make_text_sr` build real DICOM instances (a small CT series from
pydicom's `CT_small.dcm`, a Basic Text SR report) with the UIDs, dates and accession numbers a test
chooses.

Without Orthanc a test using it is skipped with the reason, except in CI (`CI` set): there the
Makefile installs Orthanc, so its absence is a set-up failure that must fail the run, not hide it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ctypes
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from kgreport.testkit.servers import log_tail

ORTHANC = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
READY_TIMEOUT = 30.0  # seconds for Orthanc to answer GET /system (usually well under 1 s)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via an http_proxy
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")


def orthanc_or_skip() -> str:
    """The Orthanc executable; skips the test when it is missing, but fails in CI where it must be there."""
    exe = shutil.which(ORTHANC) or (f"/usr/sbin/{ORTHANC}" if Path(f"/usr/sbin/{ORTHANC}").is_file() else None)
    missing = None
    if exe is None:
        missing = "Orthanc is not installed (`make pacs-server` installs Debian's orthanc and orthanc-dicomweb)"
    elif not DICOMWEB_PLUGIN.is_file():
        missing = f"the Orthanc DICOMweb plugin {DICOMWEB_PLUGIN} is missing (apt-get install orthanc-dicomweb)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must have it", pytrace=False)
        pytest.skip(missing)
    assert exe is not None
    return exe


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM Orthanc if the test process dies (kill -9 leaves no orphan server)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (Orthanc binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """One running Orthanc: its URLs, its process, and a REST upload that bypasses DICOMweb."""

    url: str  # REST API base, e.g. http://127.0.0.1:8042
    dicomweb_url: str  # what kgreport is given: dicomweb+http://127.0.0.1:8042/dicom-web
    process: subprocess.Popen[bytes]
    log_path: Path
    auth: tuple[str, str] | None = None  # the first registered user, used by `upload` and readiness checks
    uploaded: list[str] = field(default_factory=list)  # Orthanc ids of the instances uploaded

    def _request(
        self, path: str, data: bytes | None = None, content_type: str | None = None, method: str | None = None
    ) -> bytes:
        method = method or ("POST" if data is not None else "GET")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with _NO_PROXY.open(request, timeout=30) as response:
            return bytes(response.read())

    def upload(self, dataset_or_path: Dataset | Path | str) -> str:
        """Store one instance through the REST API (POST /instances); returns Orthanc's instance id."""
        if isinstance(dataset_or_path, Dataset):
            buffer = io.BytesIO()
            dataset_or_path.save_as(buffer, enforce_file_format=True)
            body = buffer.getvalue()
        else:
            body = Path(dataset_or_path).read_bytes()
        answer = json.loads(self._request("/instances", body, "application/dicom"))
        instance_id = str(answer["ID"])
        self.uploaded.append(instance_id)
        return instance_id

    def delete_study(self, study_uid: str) -> None:
        """Delete a study from the PACS (REST: look its Orthanc ids up, then DELETE each)."""
        for found in json.loads(self._request("/tools/lookup", study_uid.encode(), "text/plain")):
            if found.get("Type") == "Study":
                self._request(f"/studies/{found['ID']}", method="DELETE")

    def upload_all(self, datasets: list[Dataset]) -> None:
        """`upload` each dataset in turn."""
        for ds in datasets:
            self.upload(ds)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of Orthanc's log, for failure messages."""
        return log_tail(self.log_path, chars)

    def kill(self) -> None:
        """SIGKILL Orthanc now (a PACS that goes away mid-build) and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop Orthanc cleanly (SIGTERM), killing it when it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()


def orthanc_config(folder: Path, http_port: int, dicom_port: int, users: dict[str, str] | None) -> dict[str, object]:
    """Orthanc 1.10 configuration: storage in `folder`, loopback only, DICOMweb at /dicom-web/."""
    return {
        "Name": "kgreport-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpThreadsCount": 8,
        "HttpDescribeErrors": True,
        # The DICOM (DIMSE) listener is off: tests talk DICOMweb only, and it would bind every interface.
        "DicomServerEnabled": False,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,  # connections from 127.0.0.1 only
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
    }


class _ExitedEarly(RuntimeError):
    """Orthanc exited before answering (a bad config, or a port taken since `free_port` picked it)."""


def _wait_ready(orthanc: Orthanc, deadline: float) -> None:
    """Poll GET /system until it answers 200; raise if Orthanc exits or the deadline passes."""
    last = "no answer yet"
    while time.monotonic() < deadline:
        if orthanc.process.poll() is not None:
            raise _ExitedEarly(f"Orthanc exited with {orthanc.process.returncode}:\n{orthanc.log_tail()}")
        try:
            orthanc._request("/system")
            return
        except (urllib.error.URLError, OSError) as err:
            last = str(err)
        time.sleep(0.05)
    raise RuntimeError(f"Orthanc did not answer GET /system within {READY_TIMEOUT} s ({last}):\n{orthanc.log_tail()}")


@contextlib.contextmanager
def running_orthanc(folder: Path, users: dict[str, str] | None = None) -> Iterator[Orthanc]:
    """An Orthanc with the DICOMweb plugin serving from `folder` until the block ends.

    `users` (name -> password) turns HTTP basic authentication on. Ports are picked free on 127.0.0.1;
    a start that loses a port race (another process took it) is retried on new ports.
    """
    exe = orthanc_or_skip()
    folder.mkdir(parents=True, exist_ok=True)
    auth = next(iter(users.items())) if users else None
    for attempt in range(3):
        http_port, dicom_port = free_port(), free_port()
        config_path = folder / "orthanc.json"
        config_path.write_text(json.dumps(orthanc_config(folder, http_port, dicom_port, users), indent=2))
        log_path = folder / f"orthanc-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [exe, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=folder, preexec_fn=_die_with_parent
            )
        url = f"http://127.0.0.1:{http_port}"
        orthanc = Orthanc(url, f"dicomweb+{url}/dicom-web", process, log_path, auth)
        try:
            _wait_ready(orthanc, time.monotonic() + READY_TIMEOUT)
        except _ExitedEarly:
            if attempt == 2:
                raise
            continue  # most likely a port taken in between: try new ones
        except BaseException:
            orthanc.stop()
            raise
        try:
            yield orthanc
        finally:
            orthanc.stop()
        return


def _dated_copy(base: Dataset, **values: object) -> Dataset:
    """A deep copy of `base` with the given attributes set."""
    ds = copy.deepcopy(base)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def make_ct_study(
    study_uid: str | None = None,
    *,
    slices: int = 3,
    study_date: str = "20240101",
    accession_number: str = "ACC0001",
    patient_id: str = "PAT0001",
    series_description: str = "CT chest",
) -> list[Dataset]:
    """A one-series CT study of `slices` real CT instances (pydicom's CT_small.dcm, 128x128 int16).

    Each slice gets its own SOPInstanceUID, InstanceNumber (1..n), ImagePositionPatient (z step 5 mm)
    and pixel values (the original plus 10 x its index), so a test can tell slices apart after a round
    trip through a PACS.
    """
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str), "pydicom's test files are missing"
    base = dcmread(path)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    pixels = base.pixel_array.astype(np.int16)
    x, y, z = (float(v) for v in base.ImagePositionPatient)
    out = []
    for i in range(slices):
        sop_uid = generate_uid()
        ds = _dated_copy(
            base,
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
            SOPInstanceUID=sop_uid,
            InstanceNumber=i + 1,
            SeriesNumber=1,
            ImagePositionPatient=[x, y, z + 5.0 * i],
            StudyDate=study_date,
            SeriesDate=study_date,
            AccessionNumber=accession_number,
            PatientID=patient_id,
            SeriesDescription=series_description,
            Modality="CT",
            PixelData=(pixels + 10 * i).astype(np.int16).tobytes(),
        )
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        out.append(ds)
    return out


def _code(value: str, scheme: str, meaning: str) -> Sequence:
    """A one-item code sequence (ConceptNameCodeSequence)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return Sequence([item])


def _text_item(text: str, meaning: str, code: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = _code(code, "DCM", meaning)
    item.TextValue = text
    return item


def make_text_sr(
    study_uid: str,
    text: str,
    *,
    impression: str | None = None,
    study_date: str = "20240101",
    accession_number: str = "ACC0001",
    patient_id: str = "PAT0001",
) -> Dataset:
    """A Basic Text SR report (SOP class 1.2.840.10008.5.1.4.1.1.88.11) in study `study_uid`.

    The document root is a CONTAINER "Diagnostic Imaging Report" (LOINC 18748-4) holding a
    CONTAINER "Findings" (DCM 121070) with one TEXT item "Finding" (DCM 121071) carrying `text`, and,
    when given, a TEXT item "Impression" (DCM 121073) carrying `impression`.
    """
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 99, 1
    ds.StudyDate = ds.ContentDate = study_date
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.PatientID, ds.PatientName = accession_number, patient_id, "Test^Patient"
    ds.SeriesDescription = "Radiology report"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    # The document root is itself the top CONTAINER content item.
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = _code("18748-4", "LN", "Diagnostic Imaging Report")
    findings = Dataset()
    findings.RelationshipType = "CONTAINS"
    findings.ValueType = "CONTAINER"
    findings.ContinuityOfContent = "SEPARATE"
    findings.ConceptNameCodeSequence = _code("121070", "DCM", "Findings")
    findings.ContentSequence = Sequence([_text_item(text, "Finding", "121071")])
    items = [findings]
    if impression is not None:
        items.append(_text_item(impression, "Impression", "121073"))
    ds.ContentSequence = Sequence(items)
    return ds
