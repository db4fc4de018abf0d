"""Job records: progress, results and failures are kept on disk and survive a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from kgreport.api.service.jobs import INTERRUPTED, Job, JobRunner
from kgreport.knowledge.processes import process_start_time


def _wait(runner: JobRunner, job_id: str, states: tuple[str, ...]) -> Job:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        if job is not None and job.state in states:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_finished_jobs_survive_a_restart(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)

    def work(job: Job) -> dict[str, int]:
        job.set_total(3)
        for _ in range(3):
            job.advance(1)
        return {"cases_added": 3}

    def fail(job: Job) -> dict[str, int]:
        raise ValueError("archive is empty")

    done = runner.submit("index_build", {"name": "a"}, work)
    failed = runner.submit("index_build", {"name": "b"}, fail)
    _wait(runner, failed.id, ("failed",))
    runner.shutdown()

    restarted = JobRunner(tmp_path)
    kept = restarted.get(done.id)
    assert kept is not None and kept.state == "succeeded" and kept.result == {"cases_added": 3}
    assert kept.as_json()["progress"] == 1.0 and kept.params == {"name": "a"}
    lost = restarted.get(failed.id)
    assert lost is not None and lost.state == "failed" and lost.error == "ValueError: archive is empty"


def test_a_job_cut_short_by_a_restart_is_marked_interrupted(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)
    release = threading.Event()

    def slow(job: Job) -> dict[str, int]:
        job.set_total(10)
        release.wait(30)
        return {}

    job = runner.submit("index_build", {"name": "a"}, slow)
    queued = runner.submit("index_build", {"name": "b"}, slow)
    _wait(runner, job.id, ("running",))
    deadline = time.monotonic() + 30
    while json.loads((tmp_path / f"{job.id}.json").read_text())["total"] != 10:  # saved right after the change
        assert time.monotonic() < deadline, "the total never reached the record"
        time.sleep(0.01)
    assert json.loads((tmp_path / f"{job.id}.json").read_text())["state"] == "running"

    after_crash = JobRunner(tmp_path)  # what a new server process finds
    for job_id in (job.id, queued.id):
        record = after_crash.get(job_id)
        assert record is not None and record.state == "interrupted" and record.error == INTERRUPTED
    release.set()
    runner.shutdown()


def test_unreadable_records_are_skipped_and_old_ones_forgotten(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    runner = JobRunner(tmp_path, keep=2)
    ids = []
    for n in range(4):
        job = runner.submit("index_build", {"n": n}, lambda job: {})
        _wait(runner, job.id, ("succeeded",))
        ids.append(job.id)
    runner.shutdown()
    assert runner.get(ids[0]) is None and runner.get(ids[-1]) is not None
    assert not (tmp_path / f"{ids[0]}.json").exists()
    assert len([p for p in tmp_path.glob("*.json") if p.name != "broken.json"]) <= 3


def test_workers_share_records_and_only_a_dead_workers_jobs_are_interrupted(tmp_path: Path) -> None:
    """Service worker processes share the records folder; each reads the others' jobs from disk."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs

    def record(job_id: str, pid: int, state: str, started: int | None = None) -> None:
        job = Job(job_id, "index_build", {}, state, worker_pid=pid, worker_started=started or process_start_time(pid))
        (tmp_path / f"{job_id}.json").write_text(json.dumps(job.as_json()))

    record("aaaaaaaaaaaaaaaa", os.getppid(), "running")  # a live worker's build
    record("bbbbbbbbbbbbbbbb", gone.pid, "running")  # a worker that died mid-build
    record("dddddddddddddddd", os.getppid(), "running", started=1)  # its id reused by a process started later
    runner = JobRunner(tmp_path)
    live, dead, reused = runner.get("aaaaaaaaaaaaaaaa"), runner.get("bbbbbbbbbbbbbbbb"), runner.get("dddddddddddddddd")
    assert live is not None and live.state == "running"
    assert dead is not None and dead.state == "interrupted" and dead.error == INTERRUPTED
    assert reused is not None and reused.state == "interrupted"

    record("aaaaaaaaaaaaaaaa", os.getppid(), "succeeded")  # the other worker finishes: this one sees it
    record("cccccccccccccccc", os.getppid(), "queued")  # and a job submitted there after this one started
    assert (job := runner.get("aaaaaaaaaaaaaaaa")) is not None and job.state == "succeeded"
    assert (job := runner.get("cccccccccccccccc")) is not None and job.state == "queued"
    assert runner.get("../etc/passwd") is None and runner.get("") is None
    assert runner.get("ab" * 5_000) is None and runner.get("aaaa") is None, "ids are 16 hex digits, nothing else"
    mine = runner.submit("index_build", {}, lambda job: {"ok": 1})
    done = _wait(runner, mine.id, ("succeeded",))
    assert (done.worker_pid, done.worker_started) == (os.getpid(), process_start_time(os.getpid()))
    runner.shutdown()
