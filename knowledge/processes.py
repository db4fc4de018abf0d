"""Whether a process still runs: for state that names the process owning it (the embedded graph
server's owner, a service worker's jobs), which must be taken over or marked interrupted once that
process is gone. Process ids are reused, so a record can keep the start time too."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (Linux); None without /proc or for a process that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), None where /proc does not say."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not) and, given `started`,
    is the process that started then rather than a later one that got the same id."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc (not Linux): trust the signal check
    if fields[0] == "Z":
        return False
    return started is None or process_start_time(pid) in (started, None)
