"""A hospital PACS as an archive, over DICOMweb: studies found with QIDO-RS, instances fetched with WADO-RS.

Each study is fetched once into a local cache (`<cache>/studies/<StudyInstanceUID>/`), de-identified
on the way (`indexing.pacs.deidentify`: no patient name or birth date is ever written; the patient id
only as a salted hash), and then read exactly as a DICOM folder is (`DicomFolderArchive`): the same
series-to-volume rules, the same slice choice and windows at embedding time. A study is fetched into
a hidden `.partial` folder and renamed into place when whole, so a fetch cut short (`kill -9`, the
PACS gone) is fetched again next time and never half-read; a study already in the cache is not
fetched again.

The report of a study comes from a text Structured Report in the study itself when it holds one;
otherwise from a sidecar `reports.jsonl`/`reports.csv` keyed by StudyInstanceUID or AccessionNumber.
A study with neither, or whose SR cannot be read, is indexed image-only and counted
(`report_sources`, `report_problems`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kgreport.indexing.archives.base import ArchiveError
from kgreport.indexing.archives.dicom_folder import DicomFolderArchive
from kgreport.indexing.archives.sidecar_reports import ReportTable, read_report_table
from kgreport.indexing.pacs.client import DicomWebSource, PacsCredentials, StudyRef, redacted
from kgreport.indexing.pacs.deidentify import deidentify
from kgreport.indexing.pacs.structured_report import MalformedReportError, is_text_sr, report_text
from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.retrieval.ids import is_valid_id
from kgreport.retrieval.records import Case, SkippedItem

log = logging.getLogger(__name__)
STUDY_INFO = "study.json"  # what the fetch learnt about the study (report source, problems)
URL_SCHEMES = ("dicomweb+http://", "dicomweb+https://")


def check_date(value: str | None) -> str | None:
    """A StudyDate bound as given (`YYYYMMDD`), or ArchiveError saying the form."""
    if value is None or value == "":
        return None
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise ArchiveError(f"study date {value!r}: use YYYYMMDD, e.g. 20240131") from None
    return value


def is_pacs_url(text: str | Path) -> bool:
    """Whether an archive argument names a PACS (`dicomweb+http(s)://...`) rather than a path."""
    return isinstance(text, str) and text.lower().startswith(URL_SCHEMES)


@dataclass(frozen=True)
class PacsQuery:
    """Which studies of the PACS an index holds."""

    since: str | None = None  # StudyDate from, YYYYMMDD
    until: str | None = None  # StudyDate to, YYYYMMDD
    modality: str | None = None  # studies holding this modality (ModalitiesInStudy), and only its series
    study_uids: tuple[str, ...] = ()  # only these studies (empty: all that match)

    def __post_init__(self) -> None:
        check_date(self.since)
        check_date(self.until)

    @classmethod
    def from_json(cls, data: UncheckedJson) -> PacsQuery:
        """The query `as_json` wrote."""
        fields = {k: data.get(k) for k in ("since", "until", "modality")}
        return cls(**fields, study_uids=tuple(data.get("study_uids") or ()))

    def as_json(self) -> JsonObject:
        fields = {"since": self.since, "until": self.until, "modality": self.modality}
        return {**fields, "study_uids": list(self.study_uids)}


@dataclass
class FetchCounts:
    """What a run fetched and found, for the build's summary."""

    fetched: int = 0
    cached: int = 0
    report_sources: Counter[str] = field(default_factory=Counter)
    report_problems: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> JsonObject:
        return {
            "studies_fetched": self.fetched,
            "studies_from_cache": self.cached,
            "report_sources": dict(self.report_sources),
            "report_problems": self.report_problems[:100],
        }


class DicomWebArchive:
    """The studies of one PACS that match a `PacsQuery`, listed when opened (so `len` is known)."""

    def __init__(
        self,
        url: str,
        cache: Path,
        credentials: PacsCredentials,
        salt: bytes,
        query: PacsQuery | None = None,
        reports: Path | None = None,
    ) -> None:
        self.url = url
        self.source = DicomWebSource(url, credentials)
        self.name = redacted(url)
        self.cache = Path(cache)
        self.salt = salt
        self.query = query or PacsQuery()
        self._reports = read_report_table(Path(reports)) if reports is not None else ReportTable()
        self.counts = FetchCounts()
        self.source.probe()  # a wrong URL or credentials fail here, before a job or a progress bar
        self.studies = self.list_studies(self.query)

    def list_studies(self, query: PacsQuery) -> list[StudyRef]:
        """The PACS's studies that match `query`, each StudyInstanceUID once."""
        wanted = set(query.study_uids)
        found = self.source.studies(since=query.since, until=query.until, modality=query.modality)
        unique: dict[str, StudyRef] = {}
        for study in found:  # a PACS may list one StudyInstanceUID twice (Orthanc does, under two patient ids)
            if (not wanted or study.study_uid in wanted) and study.study_uid not in unique:
                unique[study.study_uid] = study
        return list(unique.values())

    def __len__(self) -> int:
        return len(self.studies)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        for study in self.studies:
            if not is_valid_id(study.study_uid):
                yield SkippedItem(source=repr(study.study_uid)[:80], reason="StudyInstanceUID breaks the id rule")
                continue
            folder = self._fetched(study)
            info = read_study_info(folder)
            self.counts.report_sources[info["report_source"]] += 1
            if info.get("report_problem"):
                self.counts.report_problems.append({"study": study.study_uid, "problem": info["report_problem"]})
            for item in DicomFolderArchive(folder, image_only=True):
                if isinstance(item, Case):
                    item.metadata.update(study_date=study.study_date, report_source=info["report_source"])
                yield item

    # -- fetching ----------------------------------------------------------------------------------
    def study_folder(self, study_uid: str) -> Path:
        return self.cache / "studies" / study_uid

    def _fetched(self, study: StudyRef) -> Path:
        """The study's cache folder, fetched first unless a whole copy is there."""
        folder = self.study_folder(study.study_uid)
        if (folder / STUDY_INFO).is_file():
            self.counts.cached += 1
            return folder
        partial = folder.with_name(f".{study.study_uid}.partial")
        shutil.rmtree(partial, ignore_errors=True)  # what a fetch cut short left
        partial.mkdir(parents=True)
        report, source, problem = None, "none", None
        for series in self.source.series(study.study_uid):
            modality = (series.modality or "").upper()
            if modality == "SR":
                if report is None:
                    report, problem = self._sr_text(study.study_uid, series.series_uid, problem)
                    source = "sr" if report is not None else source
                continue
            if self.query.modality and modality != self.query.modality.upper():
                continue
            target = partial / series.series_uid
            target.mkdir()
            for n, ds in enumerate(self.source.instances(study.study_uid, series.series_uid)):
                deidentify(ds, self.salt).save_as(target / f"{n:05d}.dcm")
        if report is None:
            row = self._reports.get(study.study_uid) or self._reports.get(study.accession_number)
            if row is not None and row.fields.get("report"):
                report, source = row.fields["report"], "table"
        if report is not None:
            line = json.dumps({"case_id": study.study_uid, "report": report})
            (partial / "reports.jsonl").write_text(line + "\n", encoding="utf-8")
        info = {"study_uid": study.study_uid, "report_source": source, "report_problem": problem}
        (partial / STUDY_INFO).write_text(json.dumps(info), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(partial, folder)  # whole, or not there at all
        self.counts.fetched += 1
        return folder

    def _sr_text(self, study_uid: str, series_uid: str, problem: str | None) -> tuple[str | None, str | None]:
        """(report text, problem): the first readable text SR of the series; a problem names what failed."""
        for ds in self.source.instances(study_uid, series_uid):
            if not is_text_sr(ds):
                continue
            try:
                return report_text(ds), None
            except MalformedReportError as err:
                problem = f"SR {ds.get('SOPInstanceUID', '?')}: {err}"
                log.warning("study %s: unreadable report (%s); indexed image-only", study_uid, problem)
        return None, problem


def read_study_info(folder: Path) -> UncheckedJson:
    """The `study.json` of a fetched study (ArchiveError when it is missing or unreadable)."""
    try:
        data = json.loads((folder / STUDY_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ArchiveError(f"{folder.name}: no readable {STUDY_INFO} ({err})") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{folder.name}: {STUDY_INFO} is not an object")
    return data
