"""Indexes kept in step with a PACS: build from a DICOMweb URL, then sync, from the CLI or the service.

An index built from a PACS remembers its source in `<data_dir>/pacs/<index>/source.json`: the URL
(never credentials: those come from the `KGREPORT_DICOMWEB_*` settings each time), which studies
(`PacsQuery`), the sidecar report folder if any, and after each run the time and the latest study
date seen. `sync_index` lists the studies from that date on (inclusive: a study of the same day may
arrive later) and ingests them; cases already stored are skipped, so a sync cut short by `kill -9`
is simply run again, and the record is only moved on when a sync completes. Studies that the index
holds but the PACS no longer lists are reported, never deleted here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from kgreport.indexing.archives.dicomweb import DicomWebArchive, PacsQuery
from kgreport.indexing.pacs.client import PacsCredentials
from kgreport.json_types import JsonMapping, JsonObject, UncheckedJson, json_object
from kgreport.retrieval.records import SkippedItem
from kgreport.retrieval.stores.local.rows import write_json_atomic
from kgreport.retrieval.stores.local.store import IndexNotFoundError
from kgreport.usecases.ingest import Progress, ingest
from kgreport.usecases.services import Services

SOURCE_FILE = "source.json"


def pacs_dir(services: Services, name: str) -> Path:
    """Where the index's PACS record and fetched studies live (beside the index, not in it; in the
    shared folder when replicas share one, since every replica reads the studies' images)."""
    services.settings.index_dir(name)  # the name check
    return services.settings.shared_root / "pacs" / name


def open_pacs(
    services: Services, name: str, url: str, query: PacsQuery, reports: Path | None = None
) -> DicomWebArchive:
    """The PACS as an archive for index `name`: probed and its studies listed now (errors before any job)."""
    return DicomWebArchive(
        url,
        pacs_dir(services, name),
        PacsCredentials.from_settings(services.settings),
        services.settings.patient_salt(),
        query,
        reports=reports,
    )


def read_source(services: Services, name: str) -> UncheckedJson | None:
    """The index's PACS record, or None for an index not built from a PACS."""
    path = pacs_dir(services, name) / SOURCE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _write_source(services: Services, name: str, record: JsonMapping) -> None:
    folder = pacs_dir(services, name)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / SOURCE_FILE, record)


def build_from_pacs(
    services: Services,
    name: str,
    archive: DicomWebArchive,
    *,
    create: bool = True,
    findings: bool = True,
    index_query: PacsQuery | None = None,
    on_total: Progress | None = None,
    progress: Progress | None = None,
    locked: bool = False,
) -> tuple[JsonObject, list[SkippedItem]]:
    """Ingest the opened PACS `archive` into `name` and record the source; (summary, skipped items).
    `index_query` is which studies the index holds, when the archive lists fewer (a sync's recent ones);
    `locked`: the caller holds the index's write lock already."""
    previous = read_source(services, name) or {}
    record = {
        "url": archive.url,
        "query": (index_query or archive.query).as_json(),
        "reports": previous.get("reports"),
        "created": previous.get("created") or _now(),
        "last_sync": previous.get("last_sync"),
        "latest_study_date": previous.get("latest_study_date"),
    }
    _write_source(services, name, record)  # before the ingest: a build cut short can be synced to its end
    ingested = ingest(services, name, archive, create=create, findings=findings, image_only=True,
                      on_total=on_total, progress=progress, locked=locked)  # fmt: skip
    result, skipped = ingested.as_json(), ingested.skipped
    dates = [s.study_date for s in archive.studies if s.study_date]
    if record["latest_study_date"]:
        dates.append(str(record["latest_study_date"]))
    latest = max(dates, default=None)
    _write_source(services, name, {**record, "last_sync": _now(), "latest_study_date": latest})
    return {**result, "pacs": {"url": archive.url, "studies": len(archive), **archive.counts.as_json()}}, skipped


def sync_index(
    services: Services,
    name: str,
    *,
    findings: bool = True,
    on_total: Progress | None = None,
    progress: Progress | None = None,
    locked: bool = False,
) -> tuple[JsonObject, list[SkippedItem]]:
    """Add the studies new in the PACS since the index's last sync; report those the PACS no longer lists."""
    source = read_source(services, name)
    if source is None:
        services.open_store(name)  # IndexNotFoundError when there is no such index at all
        raise IndexNotFoundError(f"index {name!r} was not built from a PACS (no {SOURCE_FILE}); nothing to sync")
    query = PacsQuery.from_json(source["query"])
    since = max(filter(None, (query.since, source.get("latest_study_date"))), default=None)
    reports = Path(source["reports"]) if source.get("reports") else None
    archive = open_pacs(services, name, source["url"], replace(query, since=since), reports)
    result, skipped = build_from_pacs(services, name, archive, create=False, findings=findings, index_query=query,
                                      on_total=on_total, progress=progress, locked=locked)  # fmt: skip
    listed = {s.study_uid for s in archive.list_studies(query)}
    stored = services.open_store(name).case_ids()
    gone = sorted(stored - listed)
    no_longer: JsonObject = {"count": len(gone), "case_ids": gone[:100], "deleted": False}
    pacs = json_object(result["pacs"], "the build's pacs summary")
    return {**result, "pacs": {**pacs, "since": since, "no_longer_in_pacs": no_longer}}, skipped


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["build_from_pacs", "open_pacs", "read_source", "sync_index"]
