"""Background jobs (index builds): one worker thread, status records the API reports.

A build can take minutes, so `POST /v1/indexes` answers 202 with a job id at once and the build runs
here; `GET /v1/jobs/{id}` shows its state, progress (cases done of total), result and error. Jobs
run one at a time: builds are CPU-bound and would only slow each other down. Records live in memory
for the life of the process; an index build that a restart cuts short resumes when it is run again
(the store keeps what was committed).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    state: str = "queued"  # queued → running → succeeded | failed
    total: int | None = None
    done: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["progress"] = round(self.done / self.total, 4) if self.total else None
        return data


Work = Callable[[Job], dict[str, Any]]  # reads/updates job.total and job.done, returns the result


class JobRunner:
    def __init__(self, keep: int = 200) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgreport-job")
        self._keep = keep

    def submit(self, kind: str, params: dict[str, Any], work: Work) -> Job:
        job = Job(id=uuid.uuid4().hex[:16], kind=kind, params=params)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job, work: Work) -> None:
        job.state, job.started_at = "running", time.time()
        try:
            job.result = work(job)
            job.state = "succeeded"
        except Exception as err:  # a job's failure is its record, not the worker's death
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.error, job.state = f"{type(err).__name__}: {err}", "failed"
        finally:
            job.finished_at = time.time()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished_at is not None]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job.id]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
