"""Load on loopback: concurrent clients against the search and report endpoints of a real server.

Starts `kgreport serve` (uvicorn, one process) on a free port over a data dir with the demo index
(built first if missing), then for each phase runs `--clients` concurrent clients for `--seconds`,
each sending its next request as soon as the last one is answered, cycling through the held-out demo
images; requests in flight at the end are waited for. Printed per phase: requests, errors (any
non-2xx or transport failure), throughput, and p50 / p99 latency.

Phases: `search_text` (JSON), `search_image` (multipart JPEG), each against three servers: query
cache off and encoders run by each request thread (`_uncached_uncoalesced`); cache off and concurrent
queries embedded together on one model thread per encoder (`_uncached`, the default coalescing: every
request still decodes and embeds its query); cache on (`_cached`, the default: the same few queries
repeat, so their embeddings are reused). Then `report` (multipart JPEG → grounded report; reports are
written one at a time, so latency there is mostly queueing).

Usage: python -m benchmarks.service_load [--clients 20] [--seconds 20] [--report-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results_io import RESULTS, write_result

REPO = Path(__file__).resolve().parents[1]
QUERIES = sorted((REPO / "data" / "demo" / "queries").glob("*.jpg"))
TEXTS = [
    "axial CT of the chest with a lung mass",
    "ring enhancing lesion in the brain",
    "small bowel obstruction with dilated loops",
    "fracture of the distal radius",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def _request(client: httpx.AsyncClient, phase: str, i: int) -> httpx.Response:
    if phase == "search_text":
        return await client.post("/v1/search", json={"text": TEXTS[i % len(TEXTS)], "k": 5})
    image = QUERIES[i % len(QUERIES)]
    files = {"image": (image.name, image.read_bytes(), "image/jpeg")}
    if phase == "search_image":
        return await client.post("/v1/search", files=files, data={"k": "5"})
    return await client.post("/v1/reports", files=files)


async def run_phase(base: str, phase: str, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    started = time.perf_counter()

    async def client_loop(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            i = n
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    response = await _request(client, phase, i)
                    if response.status_code >= 300:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                latencies.append(time.perf_counter() - t0)
                i += clients

    await asyncio.gather(*(client_loop(n) for n in range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "throughput_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "wall_seconds": round(wall, 1),
    }


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not come up")


@contextlib.contextmanager
def serve(env: dict[str, str]) -> Iterator[str]:
    """A `kgreport serve` process on a free port, ready and warmed up; its base URL."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(base, server)
        # Warm-up: models load on first use, and that is not what this measures. Each query is sent
        # once, so with the cache on the phases measure queries the server has seen (a page re-searching).
        for text in TEXTS:
            httpx.post(base + "/v1/search", json={"text": text, "k": 5}, timeout=300).raise_for_status()
        for image in QUERIES:
            files = {"image": (image.name, image.read_bytes())}
            httpx.post(base + "/v1/search", files=files, data={"k": "5"}, timeout=300).raise_for_status()
        yield base
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20, help="per search phase")
    parser.add_argument("--report-seconds", type=float, default=30)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary one")
    parser.add_argument("--out", type=Path, default=RESULTS / "service_load.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir)}
        if not (data_dir / "indexes" / "demo" / "manifest.json").is_file():
            demo = str(REPO / "data" / "demo")
            subprocess.run(
                [sys.executable, "-m", "api.cli", "index", "build", demo, "--name", "demo"],
                env=env,
                check=True,
                capture_output=True,
            )
        phases: dict[str, Any] = {}
        # Cache off: every request decodes and embeds its query (what a stream of new images costs),
        # first with each request thread running the encoders itself, then with concurrent queries
        # coalesced on one model thread per encoder (the default). Cache on (the default): the same
        # few queries again and again, as a page re-searching does.
        servers = {
            "uncached_uncoalesced": {"KGREPORT_QUERY_CACHE_SIZE": "0", "KGREPORT_COALESCE_QUERIES": "0"},
            "uncached": {"KGREPORT_QUERY_CACHE_SIZE": "0"},
            "cached": {},
        }
        for server, overrides in servers.items():
            with serve({**env, **overrides}) as base:
                for phase in ("search_text", "search_image"):
                    name = f"{phase}_{server}"
                    phases[name] = asyncio.run(run_phase(base, phase, args.clients, args.seconds))
                    print(name, phases[name])
                if server == "cached":
                    phases["report"] = asyncio.run(run_phase(base, "report", args.clients, args.report_seconds))
                    print("report", phases["report"])
    write_result(args.out, {"phases": phases, "server": "kgreport serve (uvicorn, 1 process)", "loopback": True})


if __name__ == "__main__":
    main()
