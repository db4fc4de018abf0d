"""Load on loopback: concurrent clients against the search and report endpoints of a real server.

Starts `kgreport serve` on a free port over a data dir with the demo index (built first if missing),
then for each phase runs `--clients` concurrent clients for `--seconds`, each on its own keep-alive
connection, sending its next request as soon as the last one is answered and cycling through the
held-out demo images (or four texts); requests in flight at the end are waited for. Printed per
phase: requests, errors (any non-2xx or transport failure), throughput, p50 / p99 latency, and the CPU
the server processes and the load generator used per request.

The load generator writes pre-built HTTP/1.1 requests on raw sockets (about 0.2 ms of CPU per
request, against about 3 ms for an httpx client), so that on a small machine it takes little of the
cores it shares with the server it measures.

Servers, each measured with both search phases (`search_text` JSON, `search_image` multipart JPEG):
- `1w_uncached_uncoalesced`: one worker, query cache off, each request thread runs the encoders;
- `1w_uncached`: query cache off, concurrent queries embedded together (the default coalescing);
  every request still decodes and embeds its query (a stream of new images);
- `1w_cached`: the defaults, one worker: the same few queries repeat (a page re-searching);
- `2w_uncached` and `2w_cached`: the same with `--workers 2`.
Then `report` (multipart JPEG → grounded report; one LLM per worker writes one report at a time, so
latency there is mostly queueing) on the one-worker server.

Usage: python -m kgreport.benchmarks.service_load [--clients 20] [--seconds 20] [--report-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.benchmarks.server_process import build_demo_index, running_server

REPO = Path(__file__).resolve().parents[1]
QUERIES = sorted((REPO / "data" / "demo" / "queries").glob("*.jpg"))
TEXTS = [
    "axial CT of the chest with a lung mass",
    "ring enhancing lesion in the brain",
    "small bowel obstruction with dilated loops",
    "fracture of the distal radius",
]
SERVERS: dict[str, tuple[int, dict[str, str]]] = {  # name: (workers, environment overrides)
    "1w_uncached_uncoalesced": (1, {"KGREPORT_QUERY_CACHE_SIZE": "0", "KGREPORT_COALESCE_QUERIES": "0"}),
    "1w_uncached": (1, {"KGREPORT_QUERY_CACHE_SIZE": "0"}),
    "1w_cached": (1, {}),
    "2w_uncached": (2, {"KGREPORT_QUERY_CACHE_SIZE": "0"}),
    "2w_cached": (2, {}),
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


# -- requests, pre-built -----------------------------------------------------------------------------
def _http_post(path: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: loopback\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _multipart(path: str, image: Path, fields: dict[str, str]) -> bytes:
    boundary = "kgreport" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return _http_post(path, f"multipart/form-data; boundary={boundary}", b"".join(parts))


def requests_for(phase: str) -> list[bytes]:
    if phase == "search_text":
        return [_http_post("/v1/search", "application/json", json.dumps({"text": t, "k": 5}).encode()) for t in TEXTS]
    if phase == "search_image":
        return [_multipart("/v1/search", image, {"k": "5"}) for image in QUERIES]
    return [_multipart("/v1/reports", image, {}) for image in QUERIES]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request and read its whole response; the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def run_phase(port: int, phase: str, clients: int, seconds: float, *, reconnect: bool = False) -> dict[str, Any]:
    requests = requests_for(phase)
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    started = time.perf_counter()

    async def client_loop(n: int) -> None:
        i = n
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                connection = connection or await asyncio.open_connection("127.0.0.1", port)
                status = await _exchange(*connection, requests[i % len(requests)])
                if status >= 300:
                    errors.append(f"HTTP {status}")
                if reconnect:
                    connection[1].close()
                    connection = None
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                errors.append(f"{type(err).__name__}: {err}")
                connection = None  # a new connection for the next request
            latencies.append(time.perf_counter() - t0)
            i += clients
        if connection is not None:
            connection[1].close()

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


# -- CPU accounting ----------------------------------------------------------------------------------
def _process_tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and its live descendants (Linux /proc; NaN elsewhere)."""
    try:
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except OSError:
        return float("nan")
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (parent, _) in stats.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(server: subprocess.Popen[bytes], port: int, phase: str, clients: int, seconds: float) -> dict[str, Any]:
    """`run_phase` with the server's and the load generator's CPU per request."""
    server_cpu, own_cpu = _process_tree_cpu(server.pid), _own_cpu()
    result = asyncio.run(run_phase(port, phase, clients, seconds))
    n = max(result["requests"], 1)
    result["server_cpu_ms_per_request"] = round((_process_tree_cpu(server.pid) - server_cpu) * 1000 / n, 2)
    result["client_cpu_ms_per_request"] = round((_own_cpu() - own_cpu) * 1000 / n, 2)
    return result


@contextlib.contextmanager
def serve(env: dict[str, str], workers: int = 1) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `kgreport serve` process on a free port, ready and warmed up: (process, port)."""
    with running_server(env, workers) as (server, port):
        # Warm-up: models load on first use (in each worker), and that is not what this measures. A few
        # seconds of load reach every worker; with the cache on, the phases then measure queries the
        # server has seen (a page re-searching).
        for phase in ("search_text", "search_image"):
            asyncio.run(run_phase(port, phase, 2 * workers, 3.0))
        yield server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20, help="per search phase")
    parser.add_argument("--report-seconds", type=float, default=30)
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ", ".join(SERVERS))
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary one")
    parser.add_argument("--out", type=Path, default=RESULTS / "service_load.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir)}
        build_demo_index(env, data_dir)
        phases: dict[str, Any] = {}
        for name in args.servers.split(","):
            workers, overrides = SERVERS[name]
            with serve({**env, **overrides}, workers) as (server, port):
                for phase in ("search_text", "search_image"):
                    key = f"{phase}_{name}"
                    phases[key] = measure(server, port, phase, args.clients, args.seconds)
                    print(key, phases[key], flush=True)
                if name == "1w_cached" and args.report_seconds > 0:
                    phases["report"] = measure(server, port, "report", args.clients, args.report_seconds)
                    print("report", phases["report"], flush=True)
    write_result(
        args.out,
        {
            "phases": phases,
            "server": "kgreport serve (uvicorn; 1w/2w: worker processes)",
            "loopback": True,
            "cpus": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    main()
