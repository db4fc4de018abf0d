"""A hospital PACS seen through DICOMweb: find studies and series (QIDO-RS), fetch instances (WADO-RS).

`DicomWebSource` is a small typed layer over `dicomweb_client.DICOMwebClient`, the network half of
indexing from a PACS (the archive reader on top decides what to keep). It adds what the library
leaves to its caller:

* Failures are `PacsError`s (an `ArchiveError`) naming the server, never raw `requests` exceptions:
  `PacsAuthError` (401/403), `PacsUnavailableError` (refused, timed out, 5xx), `NotDicomWebError`
  (something answered, not as DICOMweb: HTML, a 404 on /studies, another API's JSON; the message
  says what: status, content type, `Server` header, first bytes).
* Credentials come only from settings (`PacsCredentials`), never from the URL, and never appear in a
  message, a log line or a repr. TLS is verified unless turned off explicitly.
* DICOM JSON is read defensively into `StudyRef` / `SeriesRef` (missing or malformed -> None), and
  paging stops on a short page without trusting a server that ignores `offset`.

URLs take the form `dicomweb+https://pacs.example.org/dicom-web` (plain `https://` works too); the
path is the DICOMweb root (Orthanc: `/dicom-web`, dcm4chee: `/dcm4chee-arc/aets/<AET>/rs`).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any, Protocol, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import retrying
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import add_certs_to_session, create_session, create_session_from_user_pass
from pydantic import SecretStr
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from kgreport.indexing.pacs.errors import (
    NotDicomWebError,
    PacsAuthError,
    PacsError,
    PacsQueryError,
    PacsUnavailableError,
    PacsUrlError,
)

log = logging.getLogger("kgreport.indexing.pacs")
# One dataset in the DICOM JSON model (PS3.18 F.2), as dicomweb-client hands it over: tag → {vr, Value},
# each Value's type set by its VR, so the readers (`indexing.archives.dicomweb`) check every one they use.
DicomJson: TypeAlias = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")

SCHEMES = {"dicomweb+https": "https", "dicomweb+http": "http", "https": "https", "http": "http"}
TLS_HINT = "set KGREPORT_DICOMWEB_CA_BUNDLE to the CA that signed its certificate"
SETTINGS_HINT = "set KGREPORT_DICOMWEB_USERNAME and KGREPORT_DICOMWEB_PASSWORD, or KGREPORT_DICOMWEB_TOKEN"
# Attributes asked of QIDO-RS (includefield), read back by tag.
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy", "PatientID")
SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances", "SeriesDescription")
# WADO-RS in whatever transfer syntax the PACS stored: no server-side transcoding (which many PACS
# cannot do); pydicom with pylibjpeg decodes the JPEG family, RLE and JPEG 2000.
ANY_TRANSFER_SYNTAX: tuple[tuple[str, str], ...] = (("application/dicom", "*"),)
RETRIED_STATUSES = (429, 408, 503, 504)  # retried by dicomweb-client with exponential back-off
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")


class DicomWebSettings(Protocol):
    """The `usecases.settings.Settings` fields a PACS source reads (a Protocol: indexing never imports use cases)."""

    @property
    def dicomweb_username(self) -> str: ...
    @property
    def dicomweb_password(self) -> SecretStr: ...
    @property
    def dicomweb_token(self) -> SecretStr: ...
    @property
    def dicomweb_verify_tls(self) -> bool: ...
    @property
    def dicomweb_ca_bundle(self) -> str: ...
    @property
    def dicomweb_timeout(self) -> float: ...


@dataclass(frozen=True)
class PacsCredentials:
    """How to authenticate to the PACS: basic auth, a bearer token, or neither. Secrets stay out of repr."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify_tls: bool = True
    ca_bundle: str | None = None  # PEM file of the CA that signed the PACS's certificate
    timeout: float = 30.0  # seconds per request (connect and read)

    @classmethod
    def from_settings(cls, settings: DicomWebSettings) -> PacsCredentials:
        """The credentials in the `KGREPORT_DICOMWEB_*` settings (empty strings mean unset)."""
        return cls(
            username=settings.dicomweb_username or None,
            password=settings.dicomweb_password.get_secret_value() or None,
            token=settings.dicomweb_token.get_secret_value() or None,
            verify_tls=settings.dicomweb_verify_tls,
            ca_bundle=settings.dicomweb_ca_bundle or None,
            timeout=settings.dicomweb_timeout,
        )

    def secrets(self) -> list[str]:
        """Every form a secret could take on the wire, for scrubbing messages."""
        found = [s for s in (self.password, self.token) if s]
        if self.username and self.password:
            found.append(base64.b64encode(f"{self.username}:{self.password}".encode()).decode())
        return found


@dataclass(frozen=True)
class StudyRef:
    """One study as QIDO-RS lists it. `patient_id` is the PACS's own id: identifying, hash it before storing."""

    study_uid: str
    study_date: str | None  # YYYYMMDD
    accession_number: str | None
    modalities: tuple[str, ...]
    patient_id: str | None


@dataclass(frozen=True)
class SeriesRef:
    """One series of a study as QIDO-RS lists it."""

    series_uid: str
    modality: str | None
    number_of_instances: int | None
    description: str | None


def redacted(url: str) -> str:
    """`url` fit for logs: any user:password@ and query string replaced by `***`."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def parse_pacs_url(url: str) -> str:
    """The http(s) base URL of a `dicomweb+https://host[:port]/path` (or `https://...`) PACS URL.

    Refuses credentials in the URL (they would end up in logs, shell history and process lists),
    query strings and fragments; the trailing slash is dropped.
    """
    shown = redacted(url)
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError as err:
        raise PacsUrlError(f"not a PACS URL: {shown} ({err})") from None
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise PacsUrlError(f"{shown}: a PACS URL starts with dicomweb+https://, dicomweb+http://, https:// or http://")
    if "@" in parts.netloc:
        raise PacsUrlError(f"{shown}: credentials in the PACS URL are refused (URLs end up in logs); {SETTINGS_HINT}")
    if not parts.hostname:
        raise PacsUrlError(f"{shown}: the PACS URL names no host")
    if parts.query or parts.fragment:
        raise PacsUrlError(f"{shown}: a PACS URL has no query string or fragment, only the DICOMweb root path")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _session(credentials: PacsCredentials, url: str) -> requests.Session:
    """A requests session carrying the credentials and the TLS policy."""
    if credentials.token and (credentials.username or credentials.password):
        raise PacsError(f"PACS at {url}: give either a user and password or a token, not both")
    if bool(credentials.username) != bool(credentials.password):
        raise PacsError(f"PACS at {url}: basic auth needs both a user and a password; {SETTINGS_HINT}")
    if credentials.username and credentials.password:
        session = create_session_from_user_pass(credentials.username, credentials.password)
    else:
        session = create_session()
        if credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
    if not credentials.verify_tls:
        log.warning("TLS certificate verification is OFF for the PACS at %s", url)
        session.verify = False
    elif credentials.ca_bundle:
        try:
            add_certs_to_session(session, ca_bundle=credentials.ca_bundle)
        except OSError:
            raise PacsError(f"PACS at {url}: CA bundle {credentials.ca_bundle!r} does not exist") from None
    return session


# --- DICOM JSON (PS3.18 F.2): {"0020000D": {"vr": "UI", "Value": ["1.2..."]}, ...} -------------------


def _values(item: Mapping[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values if isinstance(values, list) else []


def _text(item: Mapping[str, Any], tag: str) -> str | None:
    """The first value of `tag` as a stripped string; None when missing, empty or not a plain value."""
    for value in _values(item, tag):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value).strip() or None
        return None
    return None


def _int(item: Mapping[str, Any], tag: str) -> int | None:
    text = _text(item, tag)
    try:
        return int(float(text)) if text is not None else None
    except (ValueError, OverflowError):
        return None


def _study_ref(item: Mapping[str, Any]) -> StudyRef | None:
    uid = _text(item, "0020000D")
    if uid is None:
        return None
    modalities = [str(v).strip() for v in _values(item, "00080061") if isinstance(v, str) and v.strip()]
    return StudyRef(
        study_uid=uid,
        study_date=_text(item, "00080020"),
        accession_number=_text(item, "00080050"),
        modalities=tuple(dict.fromkeys(modalities)),
        patient_id=_text(item, "00100020"),
    )


def _series_ref(item: Mapping[str, Any]) -> SeriesRef | None:
    uid = _text(item, "0020000E")
    if uid is None:
        return None
    return SeriesRef(
        series_uid=uid,
        modality=_text(item, "00080060"),
        number_of_instances=_int(item, "00201209"),
        description=_text(item, "0008103E"),
    )


def _is_dicom_json(items: object) -> bool:
    """Whether `items` is a list of DICOM JSON datasets (tag keys, elements with a `vr`)."""
    return isinstance(items, list) and all(
        isinstance(item, dict)
        and item
        and all(_TAG.fullmatch(str(k)) and isinstance(v, dict) and "vr" in v for k, v in item.items())
        for item in items
    )


def _qido_date(value: str | date | None) -> str:
    """YYYYMMDD from a date, `YYYYMMDD` or `YYYY-MM-DD`; '' for None."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    text = value.strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y%m%d")
        except ValueError:
            pass
    raise PacsQueryError(f"study date {value!r} is not YYYYMMDD or YYYY-MM-DD")


def _instance_order(ds: Dataset) -> tuple[int, str]:
    number = str(ds.get("InstanceNumber", "")).strip()
    return int(number) if number.isdigit() else 0, str(ds.get("SOPInstanceUID", ""))


class DicomWebSource:
    """One PACS, read over DICOMweb. Every method raises only `PacsError` subclasses (and ValueError for bad arguments).

    Safe to share between threads: requests' session is, and the last answer is kept per thread.
    """

    def __init__(self, url: str, credentials: PacsCredentials | None = None, *, max_attempts: int = 3) -> None:
        """`url` as `parse_pacs_url` reads it. A request that meets a network error or 429/408/503/504 is
        tried up to `max_attempts` times in all (back-off 1 s, 2 s, ...)."""
        self.url = parse_pacs_url(url)
        self.credentials = credentials or PacsCredentials()
        self.max_attempts = max(1, max_attempts)
        session = _session(self.credentials, self.url)
        # Every response passes here, so a failure can say what answered even when the library only raises.
        session.hooks["response"].append(self._remember)
        self._state = threading.local()
        try:
            self._client = DICOMwebClient(self.url, session=session, timeout=self.credentials.timeout)
        except ValueError as err:
            raise PacsUrlError(f"not a PACS URL: {self.url} ({err})") from None
        self._client.set_http_retry_params(
            retry=self.max_attempts > 1,
            max_attempts=self.max_attempts,
            wait_exponential_multiplier=500,
            retriable_error_codes=RETRIED_STATUSES,  # type: ignore[arg-type]  # ints compare equal to HTTPStatus
        )

    def __repr__(self) -> str:
        return f"DicomWebSource({self.url!r}, {self.credentials!r})"

    def probe(self) -> None:
        """Check that the URL is a DICOMweb service that accepts the credentials: one `studies?limit=1`.

        An empty answer from a server that is not DICOMweb but answers JSON lists (`[]`) cannot be
        told apart from an empty PACS; any non-empty answer is checked to be DICOM JSON.
        """
        self._search("probe", partial(self._client.search_for_studies, limit=1), not_dicomweb=(400, 404, 405, 406))
        log.info("PACS at %s answers DICOMweb", self.url)

    def studies(
        self,
        since: str | date | None = None,
        until: str | date | None = None,
        modality: str | None = None,
        page_size: int = 100,
    ) -> Iterator[StudyRef]:
        """The studies on the PACS, optionally from `since` to `until` (inclusive, `YYYYMMDD`) and with `modality`.

        Pages through QIDO-RS (`offset`/`limit`, `page_size` per request) until a short page;
        each study is yielded once even if the PACS's order shifts between pages. Bad arguments raise
        ValueError here, before any request; PACS failures raise while iterating.
        """
        if page_size < 1:
            raise PacsQueryError(f"page_size must be at least 1, not {page_size}")
        if since is not None and until is not None and _qido_date(since) > _qido_date(until):
            raise PacsQueryError(f"since ({since}) is after until ({until})")
        filters: dict[str, str] = {}
        if since is not None or until is not None:
            filters["StudyDate"] = f"{_qido_date(since)}-{_qido_date(until)}"
        if modality is not None:
            code = modality.strip().upper()
            if not _MODALITY.fullmatch(code):
                raise PacsQueryError(f"modality {modality!r} is not a DICOM modality code (CT, MR, CR...)")
            filters["ModalitiesInStudy"] = code
        search = partial(self._client.search_for_studies, fields=STUDY_FIELDS, search_filters=filters or None)
        # A 404 (or 405/406) on <root>/studies means the root is not a DICOMweb one.
        items = self._pages("list studies", search, page_size, (404, 405, 406))
        return self._usable(map(_study_ref, items), "a study without StudyInstanceUID")

    def series(self, study_uid: str) -> list[SeriesRef]:
        """The series of study `study_uid` (QIDO-RS, all pages)."""
        search = partial(self._client.search_for_series, study_uid, fields=SERIES_FIELDS)
        items = self._pages(f"list series of study {study_uid}", search, 100, ())
        return list(self._usable(map(_series_ref, items), f"a series of {study_uid} without SeriesInstanceUID"))

    def instances(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """Every instance of the series (WADO-RS), full datasets with pixel data, sorted by InstanceNumber.

        The whole series is held in memory; instances come in the transfer syntax the PACS stored.
        """
        what = f"retrieve series {series_uid} of study {study_uid}"
        fetch = partial(self._client.retrieve_series, study_uid, series_uid, media_types=ANY_TRANSFER_SYNTAX)
        datasets = self._call(what, fetch, not_dicomweb=())
        if not all(isinstance(ds, Dataset) for ds in datasets):
            raise NotDicomWebError(f"PACS at {self.url}: {what}: the answer holds parts that are not DICOM")
        return sorted(datasets, key=_instance_order)

    def _usable(self, refs: Iterable[R | None], what: str) -> Iterator[R]:
        """The records that could be read; each one that could not is logged (`what` it was) and skipped."""
        for ref in refs:
            if ref is None:
                log.warning("PACS at %s listed %s; skipped", self.url, what)
            else:
                yield ref

    def _remember(self, response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        self._state.last = response
        return response

    def _last(self) -> requests.Response | None:
        return getattr(self._state, "last", None)

    def _pages(
        self, what: str, search: Callable[..., list[DicomJson]], page_size: int, not_dicomweb: tuple[int, ...]
    ) -> Iterator[Mapping[str, Any]]:
        """QIDO results page by page, each item once (by its whole content), until a short or empty page."""
        offset = 0
        seen: set[str] = set()
        while True:
            page = self._search(what, partial(search, offset=offset, limit=page_size), not_dicomweb)
            last = self._last()
            capped = last is not None and "Warning" in last.headers  # PS3.18 6.7.1.2: more results remain
            new = 0
            for item in page:
                key = json.dumps(item, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    new += 1
                    yield item
            if not page or (len(page) < page_size and not capped):
                return
            if new == 0:
                log.warning("PACS at %s repeats results at offset %d (offset ignored?); stopping", self.url, offset)
                return
            offset += len(page)

    def _search(
        self, what: str, search: Callable[[], list[DicomJson]], not_dicomweb: tuple[int, ...]
    ) -> list[DicomJson]:
        """One QIDO-RS request whose answer must be DICOM JSON."""
        items = self._call(what, search, not_dicomweb)
        if not _is_dicom_json(items):
            raise self._not_dicomweb(what, self._answer())
        return items

    def _call(self, what: str, request: Callable[[], T], not_dicomweb: tuple[int, ...]) -> T:
        """Run one library call, turning every failure into the matching `PacsError` (statuses in
        `not_dicomweb` mean the URL is not a DICOMweb root)."""
        self._state.last = None
        try:
            return request()
        except requests.exceptions.SSLError as err:
            raise PacsError(
                self._scrub(f"TLS with the PACS at {self.url} failed ({_brief(err)}); {TLS_HINT}")
            ) from None
        except requests.exceptions.Timeout:
            tries = f"{self.max_attempts} tries" if self.max_attempts > 1 else "1 try"
            message = f"the PACS at {self.url} did not answer within {self.credentials.timeout:g} s ({what}, {tries})"
            raise PacsUnavailableError(message) from None
        except requests.exceptions.HTTPError as err:
            raise self._status_error(what, err.response, not_dicomweb) from None
        except retrying.RetryError as err:
            response = err.last_attempt.value
            if isinstance(response, requests.Response):
                raise self._status_error(what, response, not_dicomweb) from None
            raise PacsUnavailableError(f"the PACS at {self.url} kept failing ({what})") from None
        except requests.exceptions.JSONDecodeError:
            raise self._not_dicomweb(what, self._answer()) from None
        except requests.exceptions.RequestException as err:  # refused, reset, DNS, a body cut short
            message = f"cannot reach the PACS at {self.url} ({what}): {_brief(err)}"
            raise PacsUnavailableError(self._scrub(message)) from None
        except (ValueError, KeyError, TypeError, EOFError, InvalidDicomError) as err:
            if self._last() is None:  # refused before any request, e.g. a malformed UID
                raise PacsError(f"{what}: {err}") from None
            raise self._not_dicomweb(what, f"{self._answer()} ({_brief(err)})") from None

    def _status_error(self, what: str, response: requests.Response | None, not_dicomweb: tuple[int, ...]) -> PacsError:
        status = response.status_code if response is not None else 0
        answer = self._answer(response)
        if status in (401, 403):
            if self.credentials.username or self.credentials.token:
                message = f"wrong credentials for PACS at {self.url} (HTTP {status} to {what})"
            else:
                message = f"the PACS at {self.url} asks for credentials (HTTP {status}); {SETTINGS_HINT}"
            return PacsAuthError(message)
        if status >= 500 or status in RETRIED_STATUSES:
            return PacsUnavailableError(self._scrub(f"the PACS at {self.url} failed to {what}: {answer}"))
        if status in not_dicomweb:
            return self._not_dicomweb(what, answer)
        return PacsError(self._scrub(f"the PACS at {self.url} refused to {what}: {answer}"))

    def _not_dicomweb(self, what: str, answer: str) -> NotDicomWebError:
        message = f"{self.url} does not answer as DICOMweb (is the path its DICOMweb root?): {what} got {answer}"
        return NotDicomWebError(self._scrub(message))

    def _answer(self, response: requests.Response | None = None) -> str:
        """What answered: status, content type, Server header and the first bytes of the body."""
        response = response if response is not None else self._last()
        if response is None:
            return "no answer"
        content_type = response.headers.get("Content-Type") or "no content type"
        server = response.headers.get("Server")
        try:
            head = response.content[:120].decode("utf-8", "replace")
        except Exception:  # a streamed body already consumed, or cut short
            head = ""
        head = " ".join(head.split())[:80]
        where = f"Server: {server}" if server else "no Server header"
        return f"HTTP {response.status_code} ({content_type}, {where}), body starting {head!r}"

    def _scrub(self, message: str) -> str:
        """`message` with any secret of the credentials masked (short secrets would mask ordinary words)."""
        for secret in self.credentials.secrets():
            if len(secret) >= 4:
                message = message.replace(secret, "***")
        return message


def _brief(err: BaseException) -> str:
    """An exception's type and message, shortened (urllib3's wrap several layers of repr)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"
