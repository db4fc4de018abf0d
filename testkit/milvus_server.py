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


def _ReusingConfig(**kwargs: Any) -> Any:  # noqa: N802  (a class made on first use: `milvus` is optional)
    return _reusing_config_class()(**kwargs)


@dataclass
class MilvusUnderTest:
    """One embedded Milvus server: its URL for `KGREPORT_CASE_STORE`, and stop/start for outage tests."""

    folder: Path
    server: Any = field(default=None, repr=False)
    port: int = 0

    @property
    def url(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again, on the same port and data) and return once Milvus says it is healthy."""
        config = _ReusingConfig(**({"proxy_port": self.port} if self.port else {}))
        config.extra_configs = {"proxy.timeTickInterval": TIME_TICK_MS}
        server = milvus_or_skip()(config)
        server.set_base_dir(str(self.folder))
        server.start()  # waits on http://127.0.0.1:<metrics port>/healthz
        self.server, self.port = server, server.listen_port

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
