"""A real `kgreport serve` (and a real demo index) for the benchmarks that talk to one over loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 180, headers: dict | None = None) -> None:
    """Until `/healthz` answers 200 (or the process exits, or `timeout` passes: RuntimeError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not come up")


@contextlib.contextmanager
def running_server(env: dict[str, str], workers: int = 1) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `kgreport serve` process on a free port, answering `/healthz`: (process, port); stopped after."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kgreport.api.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        yield server, port
    finally:
        server.terminate()
        server.wait(60)


def build_demo_index(env: dict[str, str], data_dir: Path, name: str = "demo") -> None:
    """The bundled demo archive indexed as `name` in `data_dir`, unless it is there already."""
    if not (data_dir / "indexes" / name / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "kgreport.api.cli", "index", "build", str(DEMO), "--name", name],
            env=env,
            check=True,
            capture_output=True,
        )
