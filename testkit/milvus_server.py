"""A real Milvus for tests: the PyPI package `milvus` (an embedded Milvus standalone server, with its own
etcd and local storage), started as a process on free loopback ports with a throwaway base folder.

It runs with `proxy.timeTickInterval` at 10 ms instead of 200 ms, so a strong-consistency read waits
about 10 ms for the time tick instead of up to 200 ms (see `retrieval/stores/milvus/connection.py`); the
README says production servers should do the same. `start()` waits on Milvus's own health check.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 600.0  # seconds for /healthz; usually 20-40 s, over 180 s seen beside another suite
TIME_TICK_MS = 10


def milvus_or_skip() -> Any:
    """The `milvus` package's server class; skips without it, but fails in CI, where `make setup` installs it."""
    try:
        from milvus import MilvusServer
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the `milvus` package is missing; CI must have it (pip install -e '.[dev]')", pytrace=False)
        pytest.skip("the `milvus` package (embedded Milvus server) is not installed")
    return MilvusServer


def _reusing_config_class() -> Any:
    from milvus import MilvusServerConfig

    class ReusingConfig(MilvusServerConfig):
        """Probes ports with SO_REUSEADDR, as the server binds them: a restart on the same port must not
        fail on the connections the stopped server left in TIME_WAIT."""

        peer_port = 0  # the embedded etcd's peer port, kept across restarts of one server

        def write_config(self) -> None:
            """The server's config, plus an embedded-etcd config on a free peer port: Milvus otherwise
            leaves etcd's peer port at 2380, so a second Milvus on the machine never starts."""
            super().write_config()
            self.peer_port = self.peer_port or _free_port()
            client = f"http://127.0.0.1:{self.get('etcd_port')}"
            peer = f"http://127.0.0.1:{self.peer_port}"
            etcd = Path(self.base_data_dir) / "configs" / "embed-etcd.yaml"
            etcd.write_text(
                f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
                f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                f"initial-cluster: default={peer}\n"
            )
            milvus_yaml = Path(self.base_data_dir) / "configs" / "milvus.yaml"
            text = milvus_yaml.read_text(encoding="utf-8")
            milvus_yaml.write_text(text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd}\n", 1))

        def try_bind_port(self, port: int) -> socket.socket | None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
                return sock
            except OSError:
                sock.close()
                return None

    return ReusingConfig


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ReusingConfig(**kwargs: Any) -> Any:  # noqa: N802  (a class made on first use: `milvus` is optional)
    return _reusing_config_class()(**kwargs)


@dataclass
class MilvusUnderTest:
    """One embedded Milvus server: its URL for `KGREPORT_CASE_STORE`, and stop/start for outage tests."""

    folder: Path
    server: Any = field(default=None, repr=False)
    port: int = 0
    etcd_peer_port: int = 0  # etcd keeps its peer address in its data: a restart must reuse it

    @property
    def url(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again, on the same port and data) and return once Milvus says it is healthy."""
        config = _ReusingConfig(**({"proxy_port": self.port} if self.port else {}))
        config.extra_configs = {"proxy.timeTickInterval": TIME_TICK_MS}
        config.peer_port = self.etcd_peer_port
        server = milvus_or_skip()(config, wait_for_started=False)
        server.set_base_dir(str(self.folder))
        server.start()
        try:  # on its health check, for longer than the package's 180 s: a loaded 2-core machine took more
            server.wait_started(timeout=int(READY_TIMEOUT * 1000))
        except (TimeoutError, RuntimeError) as err:
            server.stop()
            log = self.folder / "logs" / "milvus-stderr.log"
            waited = f"{READY_TIMEOUT:.0f} s"
            raise RuntimeError(f"Milvus did not answer /healthz within {waited} ({err}); see {log}") from err
        self.server, self.port, self.etcd_peer_port = server, server.listen_port, config.peer_port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextlib.contextmanager
def running_milvus(folder: Path) -> Iterator[MilvusUnderTest]:
    milvus_or_skip()
    milvus = MilvusUnderTest(folder)
    milvus.start()
    try:
        yield milvus
    finally:
        milvus.stop()
