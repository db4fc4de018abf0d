"""A FalkorDB server that runs elsewhere, reached at `redis://HOST:PORT` (`rediss://` for TLS).

Several API replicas, on several machines, share one graph this way, and a replica that dies takes no
graph write with it: the server acknowledged each write, and its own persistence (AOF, snapshots, as its
operator configured them) keeps it. This process never starts, saves or stops that server; it connects
on the first query, reconnects after the server came back, and says which server (the URL, never the
password) failed and why.

The password comes from its own setting, never from the URL: a URL is logged and shown in errors, and a
password inside it would be too. TLS (`rediss://`) verifies the server's certificate and host name
against the system's CA store (a private CA: point `SSL_CERT_FILE` at its bundle).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from kgreport.errors import SettingError
from kgreport.knowledge.graph.backend import GraphRow, run_in_batches
from kgreport.knowledge.graph.errors import GraphUnavailableError
from kgreport.knowledge.graph.falkordb_embedded import _clean, create_falkordb_indexes, result_rows

log = logging.getLogger(__name__)
SCHEMES = {"redis": False, "rediss": True}  # scheme -> TLS
DEFAULT_PORT = 6379
# Seconds to wait for one reply. Bounded, so a server lost without a TCP reset (a network partition)
# fails the request instead of hanging it; far above what a query of ours takes (a 2000-row batch of a
# bulk load: well under a second).
REPLY_TIMEOUT = 300.0
POLL_INTERVAL = 0.05  # seconds between PINGs while waiting for the server


def parse_server_url(url: str) -> tuple[str, int, bool]:
    """`redis://HOST[:PORT]` or `rediss://HOST[:PORT]` -> (host, port, tls); ValueError for anything else.

    A URL with credentials is refused (its password would end up in logs and error messages), and so is
    a path, query or fragment: nothing of it would be used, and silently ignoring it would mislead."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise SettingError(
            f"a FalkorDB server URL starts with redis:// or rediss:// (TLS), not {scheme or 'nothing'!r}"
        )
    # Checked before anything that echoes the URL: the message must not carry the password.
    if "@" in parts.netloc:
        raise SettingError(
            "the FalkorDB server URL must not hold credentials (user:password@): give the password in the "
            "password setting (KGREPORT_FALKORDB_PASSWORD) instead"
        )
    # The messages below name the host part only: a query string can carry a password too (?password=).
    where = f"{scheme}://{parts.netloc}"
    if not parts.hostname:
        raise SettingError(f"the FalkorDB server URL {where!r} names no host (redis://HOST:PORT)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingError(f"the FalkorDB server URL {where}... takes a host and a port only (redis://HOST:PORT)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as err:  # a port that is not a number or out of range
        raise SettingError(f"the FalkorDB server URL {where!r} has a bad port: {err}") from None
    return parts.hostname, port, SCHEMES[scheme]


class FalkorDBServer:
    """The graph on a running FalkorDB server (see the module docstring); connects on its first query."""

    name = "falkordb-server"

    def __init__(self, url: str, password: str = "", graph: str = "kgreport", timeout: float = 10.0) -> None:
        """`timeout`: seconds to wait for the server to answer PING, at the first query and again after a
        lost connection (a server being restarted, or still loading its data, answers within it)."""
        if timeout <= 0:
            raise SettingError(f"timeout must be positive, not {timeout}")
        self.host, self.port, self.tls = parse_server_url(url)
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        self.address = f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}"
        self.graph_name = graph
        self.timeout = timeout
        self._password = password
        self._client: Any = None  # redis.Redis, made on the first query
        self._graph: Any = None  # falkordb Graph over the client's connection pool
        self._ready = False  # the server answered PING and has the module, and no query lost it since
        self._lock = threading.Lock()  # one thread (re)connects; the others wait for it

    # -- connection ---------------------------------------------------------------------------------------
    def _make_client(self, reply_timeout: float) -> Any:
        """A redis client of the server; `reply_timeout` bounds each reply, the TLS handshake and AUTH."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self._password or None,
            ssl=self.tls,
            ssl_check_hostname=self.tls,
            socket_connect_timeout=self.timeout,
            socket_timeout=reply_timeout,
            # redis-py would resend any command up to 10 times with backoff; `_execute` retries once itself,
            # after waiting for the server, so a dead server is reported within `timeout`.
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            protocol=2,  # the falkordb client parses RESP2 replies
        )

    def _ready_graph(self) -> Any:
        """The graph handle, after waiting for the server if it has not answered since the last failure."""
        with self._lock:
            if not self._ready:
                self._wait_until_ready()
                self._ready = True
            return self._graph

    def _wait_until_ready(self) -> None:
        """Poll PING until the server answers (refused, unreachable or loading its data: try again until
        `timeout`), then check that it has the FalkorDB module; GraphUnavailableError otherwise.

        The polling client has its own connection with replies bounded by `timeout`, so a server that
        accepts connections but never answers (hung, or plain redis behind a rediss:// URL) is reported
        within `timeout` too, not after the queries' REPLY_TIMEOUT."""
        import falkordb
        import redis

        probe = self._make_client(reply_timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    probe.ping()
                    self._check_module(probe)
                    break
                except redis.AuthenticationError as err:
                    raise self._auth_failed(err) from err
                except (redis.ConnectionError, redis.TimeoutError) as err:
                    if time.monotonic() >= deadline:
                        raise self._no_answer(err) from err
                except redis.ResponseError as err:  # e.g. an ACL user without the right to PING
                    raise GraphUnavailableError(self.name, self.address, f"refused PING: {err}") from err
                time.sleep(POLL_INTERVAL)
        finally:
            probe.close()
        if self._graph is None:
            client = self._make_client(reply_timeout=REPLY_TIMEOUT)
            # The falkordb client's constructor asks the server whether it is a cluster or a sentinel.
            self._graph = falkordb.FalkorDB(connection_pool=client.connection_pool).select_graph(self.graph_name)
            self._client = client
        log.info("connected to the FalkorDB server at %s (graph %s)", self.address, self.graph_name)

    def _no_answer(self, err: Exception) -> GraphUnavailableError:
        import redis

        state = "still loading its data" if isinstance(err, redis.BusyLoadingError) else "no answer"
        reason = f"{state} after {self.timeout:g} s ({type(err).__name__}: {err})"
        if self.tls and isinstance(err, redis.TimeoutError):
            reason += "; does it serve TLS? rediss:// is for a TLS port, redis:// for a plain one"
        return GraphUnavailableError(self.name, self.address, reason)

    def _check_module(self, client: Any) -> None:
        """GRAPH.LIST: a cheap, read-only FalkorDB command that is unknown to a redis without the module."""
        import redis

        try:
            client.execute_command("GRAPH.LIST")
        except redis.ResponseError as err:
            if "unknown command" in str(err).lower():
                raise GraphUnavailableError(
                    self.name,
                    self.address,
                    "the server there has no FalkorDB module loaded (GRAPH.* commands are unknown): start it "
                    "with --loadmodule <falkordb.so>, or run the falkordb/falkordb image",
                ) from err
            raise GraphUnavailableError(self.name, self.address, f"refused GRAPH.LIST: {err}") from err

    def _auth_failed(self, err: Exception) -> GraphUnavailableError:
        return GraphUnavailableError(
            self.name,
            self.address,
            f"authentication failed ({err}); check the password setting (KGREPORT_FALKORDB_PASSWORD)",
        )

    # -- queries ------------------------------------------------------------------------------------------
    def _execute(self, query: str, params: Mapping[str, Any] | None) -> Any:
        """Run one query; after a lost connection, wait for the server (up to `timeout`) and send it once
        more. Resending is safe for our writes (MERGE on ids: a write the server did apply before the
        connection broke is not applied twice). Query errors (syntax, constraint) are raised as they are."""
        import redis

        params = _clean(dict(params or {}))
        for attempt in range(2):
            try:
                return self._ready_graph().query(query, params)
            except redis.AuthenticationError as err:  # a reconnect met a changed password
                self._ready = False
                raise self._auth_failed(err) from err
            except (redis.ConnectionError, redis.TimeoutError) as err:
                self._ready = False  # the next send waits for PING first
                if attempt:
                    raise GraphUnavailableError(self.name, self.address, f"{type(err).__name__}: {err}") from err
                log.warning("lost the FalkorDB server at %s (%r); reconnecting", self.address, err)
        raise AssertionError("unreachable: the second failed send raised")

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[GraphRow]:
        return result_rows(self._execute(query, params))

    def run_batched(self, query: str, rows: Iterable[Mapping[str, Any]], batch_size: int = 2000) -> int:
        return run_in_batches(self._execute, query, rows, batch_size)

    def create_indexes(self) -> None:
        create_falkordb_indexes(self._execute)

    def persist(self) -> None:
        """Nothing to do: the server's own persistence, as its operator configured it (AOF with fsync, or
        snapshots), makes acknowledged writes durable. SAVE would block the server for every replica
        while it writes the whole dataset, and BGSAVE / BGREWRITEAOF fork a server this process does not
        own (up to twice its memory): its operator's call, not a bulk load's. (The embedded server
        compacts its AOF here so a restart does not replay a bulk load without its indexes; a server
        operator gets that from `auto-aof-rewrite-percentage`, or a BGREWRITEAOF after the first load.)"""

    def close(self) -> None:
        """Close this process's connections; the server, shared with others, keeps running."""
        with self._lock:
            client, self._client, self._graph, self._ready = self._client, None, None, False
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"FalkorDBServer({self.address}, graph={self.graph_name!r})"
