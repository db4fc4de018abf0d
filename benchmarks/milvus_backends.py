"""The two case-store backends side by side in one run: FAISS + SQLite (embedded) against Milvus (a server).

- `search`: the same synthetic vectors (clustered on the unit sphere, as `benchmarks.search_speed`) stored
  as one-image cases in a `CaseStore` and a `MilvusCaseStore`; single-query `search_ids` latency (p50,
  p99) and recall@10 against exact search (numpy) of the same data, at each `--sizes`. Both switch from
  exact search at 20,000 vectors: FAISS to IVF (nprobe 64), Milvus to HNSW (M 16, ef 64). Queries
  alternate between the backends. Milvus searches are given the guarantee the service gives them (the
  timestamp of the last write, which this benchmark alone made: `retrieval/stores/milvus/connection.py`);
  the same queries are also timed as strong reads, and an empty index is searched the same way: the
  floor of one gRPC round trip to Milvus. Insert time is the store's `add_cases` in batches of `BATCH`;
  Milvus then seals and indexes its segments in the background, which is waited for and timed apart
  (`index_settle_s`, including loading the collection again so that every segment is searched through
  its built index).
- `build`: the bundled demo archive (60 cases, 115 images) indexed through `ingest.ingest_archive`
  into each backend, findings off (the graph work is the same for both); images/s, median of
  `--repeats`, the backends alternating. Making the empty index (two Milvus collections, loaded) is
  timed apart: it is paid once per index.
- `service`: text-search throughput with `--clients` concurrent clients against one `kgreport serve` on
  the embedded store, then one replica on Milvus, then the clients split across two replicas sharing that
  Milvus (loopback, all on this machine's cores). The query cache is off: every request embeds its text.

Milvus is the embedded standalone server of the `milvus` package, run with `proxy.timeTickInterval` at
10 ms. A million vectors (about 1 GB in each backend, and a long insert on two cores) is only run when
asked with `--sizes ... 1000000`.

Usage: python -m kgreport.benchmarks.milvus_backends [--sizes 10000 100000] [--queries 200] [--repeats 3]
       [--clients 8] [--seconds 15] [--parts search,build,service]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.benchmarks.search_speed import clustered_vectors, recall_at_k
from kgreport.benchmarks.server_process import DEMO, build_demo_index, running_server
from kgreport.benchmarks.service_load import run_phase
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.records import Case, CaseImage, ReportSections
from kgreport.retrieval.stores.local.store import CaseStore
from kgreport.retrieval.stores.milvus.connection import MilvusConnection, MilvusSettings
from kgreport.retrieval.stores.milvus.store import MilvusCaseStore
from kgreport.testkit.milvus_server import TIME_TICK_MS, running_milvus

DIM = 256
BATCH = 2000


def _percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1000, q)), 2)


def _cases(vectors: np.ndarray, start: int) -> list[tuple[Case, dict[str, np.ndarray], np.ndarray]]:
    """One case per vector, one image each (the image vector is what the search ranks)."""
    items = []
    for n, vector in enumerate(vectors, start):
        image = CaseImage(image_id=f"v{n}", path=Path(f"/synthetic/{n}.png"))
        case = Case(case_id=f"c{n}", images=(image,), report=ReportSections(findings=f"case {n}"), patient_id=f"p{n}")
        items.append((case, {image.image_id: vector}, np.ones(8, dtype=np.float32)))
    return items


def _fill(store: Any, vectors: np.ndarray) -> float:
    started = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        store.add_cases(_cases(vectors[start : start + BATCH], start))
    return time.perf_counter() - started


def _settle(connection: MilvusConnection, collection: str, timeout_s: float = 3600) -> float:
    """Seconds until Milvus has sealed and indexed every row of `collection` (polled, not slept on)."""
    started = time.perf_counter()
    connection.client.flush(collection, timeout=timeout_s)
    while True:
        index = connection.client.describe_index(collection, "vector")
        if int(index.get("pending_index_rows", 0)) == 0 and int(index.get("indexed_rows", 0)) >= int(
            index.get("total_rows", 0)
        ):
            # Loaded again, so every segment is searched through its built index: until Milvus hands a
            # segment over by itself, it searches it with its interim index, whose recall is lower.
            connection.client.release_collection(collection, timeout=timeout_s)
            connection.client.load_collection(collection, timeout=timeout_s)
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"{collection} not indexed after {timeout_s} s: {index}")
        time.sleep(0.5)


def _timed(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> list[float]:
    seconds = []
    for query in queries:
        started = time.perf_counter()
        search(query[None, :])
        seconds.append(time.perf_counter() - started)
    return seconds


def bench_floor(connection: MilvusConnection, n_queries: int) -> dict[str, Any]:
    """One search of an empty Milvus index: what a round trip costs before any vector is compared."""
    dims: dict[str, Any] = {"image_dim": DIM, "text_dim": 8, "image_encoder": "synthetic", "text_encoder": "synthetic"}
    MilvusCaseStore.drop(connection, "bench-empty")
    empty = MilvusCaseStore.create(connection, "bench-empty", read_guarantee=lambda: connection.last_write_ts, **dims)
    queries = np.random.default_rng(0).standard_normal((n_queries, DIM)).astype(np.float32)
    empty.search_ids("image", queries[:1], 10)
    guaranteed = _timed(lambda q: empty.search_ids("image", q, 10), queries)
    strong = MilvusCaseStore.open(connection, "bench-empty")
    strong_s = _timed(lambda q: strong.search_ids("image", q, 10), queries[:50])
    ping = _timed(lambda q: connection.ping(), queries)
    MilvusCaseStore.drop(connection, "bench-empty")
    return {
        "empty_search_p50_ms": _percentile_ms(guaranteed, 50),
        "empty_search_strong_p50_ms": _percentile_ms(strong_s, 50),
        "server_version_call_p50_ms": _percentile_ms(ping, 50),
    }


def bench_search(connection: MilvusConnection, folder: Path, n: int, n_queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    data = clustered_vectors(n + n_queries, DIM, rng, n_clusters=1000, spread=1.5)
    vectors, queries = data[:n], data[n:]
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]  # row n is case c{n}, stored as image "v{n}"
    params = IndexParams()
    dims: dict[str, Any] = {"image_dim": DIM, "text_dim": 8, "image_encoder": "synthetic", "text_encoder": "synthetic"}
    faiss_store = CaseStore.create(folder / f"faiss-{n}", params=params, **dims)
    MilvusCaseStore.drop(connection, f"bench-{n}")
    # The guarantee the service gives a search: the last finished write's timestamp (here, this process's).
    milvus_store = MilvusCaseStore.create(
        connection, f"bench-{n}", params=params, read_guarantee=lambda: connection.last_write_ts, **dims
    )
    fill = {"faiss": _fill(faiss_store, vectors), "milvus": _fill(milvus_store, vectors)}
    settle_s = _settle(connection, milvus_store.images)
    stores: dict[str, Any] = {"faiss": faiss_store, "milvus": milvus_store}
    latencies: dict[str, list[float]] = {"faiss": [], "milvus": []}
    found: dict[str, list[list[int]]] = {"faiss": [], "milvus": []}
    for store in stores.values():  # one warm-up query each (Milvus loads segments on first use)
        store.search_ids("image", queries[:1], 10)
    for query in queries:
        for backend, store in stores.items():
            started = time.perf_counter()
            ids, _ = store.search_ids("image", query[None, :], 10)[0]
            latencies[backend].append(time.perf_counter() - started)
            rows = store.image_rows_for(ids)
            found[backend].append([int(row["image_id"][1:]) for row in rows])
    strong = MilvusCaseStore.open(connection, f"bench-{n}", params)  # no guarantee: every read strong
    strong_s = _timed(lambda q: strong.search_ids("image", q, 10), queries[:50])
    row: dict[str, Any] = {"n": n, "index_kind": milvus_store.info().image_index, "index_settle_s": round(settle_s, 1)}
    for backend in stores:
        row[backend] = {
            "p50_ms": _percentile_ms(latencies[backend], 50),
            "p99_ms": _percentile_ms(latencies[backend], 99),
            "recall_at_10": round(recall_at_k(np.array(found[backend]), truth), 4),
            "insert_vectors_per_s": round(n / fill[backend], 1),
        }
    row["milvus"]["strong_p50_ms"] = _percentile_ms(strong_s, 50)
    row["milvus"]["insert_seconds"] = round(fill["milvus"], 1)
    row["faiss"]["insert_seconds"] = round(fill["faiss"], 1)
    row["milvus_over_faiss_p50"] = round(row["milvus"]["p50_ms"] / row["faiss"]["p50_ms"], 1)
    faiss_store.close()
    MilvusCaseStore.drop(connection, f"bench-{n}")
    return row


def bench_build(milvus_url: str, folder: Path, repeats: int) -> dict[str, Any]:
    from kgreport.usecases import ingest
    from kgreport.usecases.services import Services
    from kgreport.usecases.settings import Settings

    seconds: dict[str, list[float]] = {"faiss": [], "milvus": []}
    created: dict[str, list[float]] = {"faiss": [], "milvus": []}
    images = 0
    for run in range(repeats):
        for backend, case_store in (("faiss", ""), ("milvus", milvus_url)):
            services = Services(Settings(data_dir=folder / f"build-{backend}-{run}", case_store=case_store))
            services.image_encoder, services.text_encoder  # models load outside the timing  # noqa: B018
            if case_store:
                MilvusCaseStore.drop(services.stores.connection, "build")  # type: ignore[attr-defined]
            started = time.perf_counter()
            services.open_store("build", create=True)
            created[backend].append(time.perf_counter() - started)
            started = time.perf_counter()
            result = ingest.ingest_archive(services, ingest.IngestRequest("build", DEMO, findings=False))
            seconds[backend].append(time.perf_counter() - started)
            images = result.summary.images_added
    medians = {backend: statistics.median(s) for backend, s in seconds.items()}
    return {
        "cases": 60,
        "images": images,
        "faiss_images_per_s": round(images / medians["faiss"], 1),
        "milvus_images_per_s": round(images / medians["milvus"], 1),
        "milvus_over_faiss_time": round(medians["milvus"] / medians["faiss"], 2),
        "runs_seconds": {b: [round(x, 2) for x in s] for b, s in seconds.items()},
        "index_creation_seconds_median": {b: round(statistics.median(s), 2) for b, s in created.items()},
    }


def bench_service(milvus_url: str, folder: Path, clients: int, seconds: float) -> dict[str, Any]:
    from kgreport.testkit.graph_server import running_falkordb_server

    with running_falkordb_server(folder / "graph") as graph:
        env = {
            **os.environ,
            "KGREPORT_CASE_STORE": milvus_url,
            "KGREPORT_FALKORDB_URL": graph.url,
            "KGREPORT_FALKORDB_PASSWORD": graph.password,
            "KGREPORT_SHARED_DIR": str(folder / "shared"),
            "KGREPORT_QUERY_CACHE_SIZE": "0",  # every request embeds its text and searches Milvus
        }
        envs = [{**env, "KGREPORT_DATA_DIR": str(folder / f"replica-{n}")} for n in range(2)]
        build_demo_index(envs[0], folder / "replica-0")  # into Milvus: both replicas see it
        local_env = {**os.environ, "KGREPORT_DATA_DIR": str(folder / "local"), "KGREPORT_QUERY_CACHE_SIZE": "0"}
        build_demo_index(local_env, folder / "local")
        with running_server(local_env) as (_, port):  # the same service on the embedded store, for scale
            asyncio.run(run_phase(port, "search_text", 2, 3.0))
            local = asyncio.run(run_phase(port, "search_text", clients, seconds))
        with running_server(envs[0]) as (_, port_a), running_server(envs[1]) as (_, port_b):
            for port in (port_a, port_b):  # models load on first use: not what this measures
                asyncio.run(run_phase(port, "search_text", 2, 3.0))
            one = asyncio.run(run_phase(port_a, "search_text", clients, seconds))

            async def both() -> list[dict[str, Any]]:
                half = clients // 2
                return list(
                    await asyncio.gather(
                        run_phase(port_a, "search_text", half, seconds),
                        run_phase(port_b, "search_text", clients - half, seconds),
                    )
                )

            two = asyncio.run(both())
    throughput_two = round(sum(r["throughput_per_s"] for r in two), 2)
    return {
        "clients": clients,
        "local_store_one_server": local,
        "one_replica": one,
        "two_replicas": {"per_replica": two, "throughput_per_s": throughput_two},
        "two_over_one_throughput": round(throughput_two / one["throughput_per_s"], 2),
        "note": f"both replicas and Milvus share this machine's {os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--parts", default="floor,search,build,service")
    parser.add_argument("--out", type=Path, default=RESULTS / "milvus_backends.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {
        "benchmark": "milvus_backends",
        "milvus_time_tick_ms": TIME_TICK_MS,
        "consistency": "searches given the last write's timestamp (strong_p50_ms: strong reads)",
        "cpu_count": os.cpu_count(),
    }
    runs: list[tuple[str, Callable[[MilvusConnection, Path, str], Any]]] = [
        ("floor", lambda conn, tmp, url: _print(bench_floor(conn, args.queries))),
        ("search", lambda conn, tmp, url: [_print(bench_search(conn, tmp, n, args.queries)) for n in args.sizes]),
        ("build", lambda conn, tmp, url: _print(bench_build(url, tmp, args.repeats))),
        ("service", lambda conn, tmp, url: _print(bench_service(url, tmp, args.clients, args.seconds))),
    ]
    with tempfile.TemporaryDirectory() as tmp, running_milvus(Path(tmp) / "milvus") as milvus:
        connection = MilvusConnection(MilvusSettings(milvus.url, timeout=60))
        import pymilvus

        result["milvus"] = connection.ping()
        result["pymilvus"] = pymilvus.__version__
        for name, run in runs:
            if name in parts:
                result[name] = run(connection, Path(tmp), milvus.url)
        connection.close()
    write_result(args.out, result)


def _print(row: Any) -> Any:
    print(row, flush=True)
    return row


if __name__ == "__main__":
    main()
