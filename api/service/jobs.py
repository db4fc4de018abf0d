"""Background jobs (index builds): one worker thread, status records the API reports.

A build can take minutes, so `POST /v1/indexes` answers 202 with a job id at once and the build runs
here; `GET /v1/jobs/{id}` shows its state, progress (cases done of total), result and error. Jobs
run one at a time: builds are CPU-bound and would only slow each other down.

Records are written to a folder (one JSON file per job, replaced atomically; progress at most once a
second), so a restart keeps them: a job that was queued or running when its server process stopped is
marked `interrupted`, and running the same build again resumes it (the store keeps what was committed).

Several service worker processes share the folder: each runs the jobs it was given, and reads the
records of the others' jobs from disk, so any worker answers `GET /v1/jobs/{id}`. A job is only marked
interrupted when the process that ran it is gone. Replicas on several machines share the folder too
(`KGREPORT_SHARED_DIR`): a process id means nothing on another host, so a running job's record is saved
at least every `HEARTBEAT_S`, and one of another host whose record is older than `STALE_S` is reported
interrupted (its replica died); submitting the build again through any replica resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.knowledge.processes import process_alive, process_start_time

log = logging.getLogger(__name__)
SAVE_EVERY_S = 1.0  # progress writes at most this often
HEARTBEAT_S = 5.0  # a running job's record is saved at least this often ...
STALE_S = 30.0  # ... so one of another host not saved for this long lost its replica
HOST = socket.gethostname()
JOB_ID_LENGTH = 16
JOB_ID = re.compile(rf"[0-9a-f]{{{JOB_ID_LENGTH}}}")  # fullmatch only: anything else is no job, never a path
INTERRUPTED = "the server stopped before this job finished; submit it again to resume where it stopped"


@dataclass
class Job:
    id: str
    kind: str
    params: JsonObject
    state: str = "queued"  # queued → running → succeeded | failed; or interrupted by a restart
    total: int | None = None
    done: int = 0
    result: JsonObject | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    worker_pid: int | None = None  # the server process running it ...
    worker_started: int | None = None  # ... and when it started (a process id alone is reused)
    worker_host: str | None = None  # ... on which machine
    saved_at: float | None = None  # wall clock of the last save: the heartbeat other hosts judge by
    _on_change: Callable[[Job, bool], None] | None = field(default=None, repr=False, compare=False)

    def advance(self, n: int) -> None:
        """`n` more items done (called by the work; the record is saved now and then)."""
        self.done += n
        self._changed(urgent=False)

    def set_total(self, total: int) -> None:
        self.total = total
        self._changed(urgent=True)

    def _changed(self, urgent: bool) -> None:
        if self._on_change is not None:
            self._on_change(self, urgent)

    def as_json(self) -> JsonObject:
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["progress"] = round(self.done / self.total, 4) if self.total else None
        return data

    @classmethod
    def from_json(cls, data: UncheckedJson) -> Job:
        names = {f.name for f in fields(cls) if not f.name.startswith("_")}
        return cls(**{k: v for k, v in data.items() if k in names})


Work = Callable[[Job], JsonObject]  # calls job.set_total / job.advance, returns the result


class JobRunner:
    """Runs jobs one at a time; keeps the last `keep` records, on disk when given a `records` folder."""

    def __init__(self, records: Path | None = None, keep: int = 200) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgreport-job")
        self._keep = keep
        self._records = records
        self._saved_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._save_lock = threading.Lock()
        if records is not None:
            records.mkdir(parents=True, exist_ok=True)
            self._load()
            threading.Thread(target=self._heartbeat, name="kgreport-job-heartbeat", daemon=True).start()

    def submit(self, kind: str, params: JsonObject, work: Work) -> Job:
        job = Job(
            id=uuid.uuid4().hex[:JOB_ID_LENGTH],
            kind=kind,
            params=params,
            worker_pid=os.getpid(),
            worker_started=process_start_time(os.getpid()),
            worker_host=HOST,
            _on_change=self._save_later,
        )
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._save(job)
        self._pool.submit(self._run, job, work)
        return job

    def active(self, kind: str, name: str) -> Job | None:
        """This worker's queued or running job of `kind` for the index `name`, if any."""
        with self._lock:
            return next(
                (
                    j
                    for j in self._jobs.values()
                    if j.kind == kind and j.params.get("name") == name and j.state in ("queued", "running")
                ),
                None,
            )

    def get(self, job_id: str) -> Job | None:
        """The job's record: ours from memory, another worker's as last saved on disk."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and job.worker_pid == os.getpid() and job.worker_host == HOST:
            return job
        record = self._read(job_id) or job
        if record is not None and record.state in ("queued", "running") and _gone(record):
            record.state, record.error, record.finished_at = "interrupted", INTERRUPTED, time.time()
        return record

    def _run(self, job: Job, work: Work) -> None:
        job.state, job.started_at = "running", time.time()
        self._save(job)
        try:
            job.result = work(job)
            job.state = "succeeded"
        except Exception as err:  # a job's failure is its record, not the worker's death
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.error, job.state = f"{type(err).__name__}: {err}", "failed"
        finally:
            job.finished_at = time.time()
            self._save(job)

    # -- records --------------------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path | None:
        return self._records / f"{job_id}.json" if self._records is not None else None

    def _save_later(self, job: Job, urgent: bool) -> None:
        if urgent or time.monotonic() - self._saved_at.get(job.id, 0.0) >= SAVE_EVERY_S:
            self._save(job)

    def _save(self, job: Job) -> None:
        path = self._path(job.id)
        if path is None:
            return
        partial = path.with_suffix(".json.partial")
        with self._save_lock:  # the job's thread and the heartbeat both save: one partial file at a time
            self._saved_at[job.id] = time.monotonic()
            job.saved_at = time.time()
            try:
                partial.write_text(json.dumps(job.as_json()), encoding="utf-8")
                os.replace(partial, path)  # a reader never sees half a record
            except OSError as err:  # a full disk must not fail the build itself
                log.warning("could not save job %s: %s", job.id, err)

    def _read(self, job_id: str) -> Job | None:
        """Another worker's record (ids are 16 hex digits: nothing else names a file)."""
        path = self._path(job_id) if JOB_ID.fullmatch(job_id) else None
        return self._read_path(path) if path is not None and path.is_file() else None

    @staticmethod
    def _read_path(path: Path) -> Job | None:
        try:
            return Job.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            log.warning("%s: unreadable job record skipped (%s)", path, err)
            return None

    def _load(self) -> None:
        assert self._records is not None
        for path in sorted(self._records.glob("*.json")):
            job = self._read_path(path)
            if job is None:
                continue
            if job.state in ("queued", "running") and _gone(job):
                job.state, job.error, job.finished_at = "interrupted", INTERRUPTED, time.time()
                self._save(job)
            self._jobs[job.id] = job
        self._forget_old()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished_at is not None]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job.id]
            self._saved_at.pop(job.id, None)
            path = self._path(job.id)
            if path is not None:
                path.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        """Save our running jobs' records now and then, so replicas on other hosts see they are alive."""
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                running = [j for j in self._jobs.values() if j.state == "running" and j.worker_pid == os.getpid()]
            for job in running:
                self._save(job)

    def shutdown(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _gone(job: Job) -> bool:
    """Whether the process that ran a queued or running job is gone: by its process id on this host, by
    its record's heartbeat on another."""
    if job.worker_host not in (None, HOST):
        return job.saved_at is None or time.time() - job.saved_at > STALE_S
    return not _alive(job.worker_pid, job.worker_started)


def _alive(pid: int | None, started: int | None) -> bool:
    """Whether the worker that ran a job still runs (records without an id are from before workers)."""
    if not pid or pid == os.getpid():
        return False  # our own id in an old record: that process is gone, we reuse its number
    return process_alive(pid, started)
