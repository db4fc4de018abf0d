"""Process liveness as the graph server's owner file and the service's job records use it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from kgreport.knowledge.processes import process_alive, process_start_time


def test_live_dead_zombie_and_reused_ids() -> None:
    me = os.getpid()
    started = process_start_time(me)
    assert started is not None and process_alive(me) and process_alive(me, started)
    assert not process_alive(me, started + 1)  # the id, but not the process that started then

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while (process_start_time(child.pid) is not None) and process_alive(child.pid):
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    assert not process_alive(child.pid)  # exited, not yet reaped: a zombie
    child.wait()
    assert not process_alive(child.pid) and process_start_time(child.pid) is None
