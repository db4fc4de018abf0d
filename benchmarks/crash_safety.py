"""Writes lost when a process is killed with SIGKILL: the CLI build, the service, the graph server.

Each scenario runs the real processes over one fresh data dir and kills one of them mid-work:

1. `cli_build`: `kgreport index build` of the demo archive (60 cases) is killed once 20 or more cases
   are in the store, then run again to the end.
2. `service`: `kgreport serve` acknowledges 5 added and 3 deleted cases, is killed, and is started
   again; every acknowledged write is looked up through the API.
3. `graph_server`: the service acknowledges 3 added and 2 deleted cases, then the embedded graph
   server (redis-server with FalkorDB) is killed. The graph as it comes back from disk is compared with
   the store (what the server itself lost), then one more case is added through the service (the next
   request, which reconciles the graph with the store) and they are compared again.

After each: `kgreport index check` (SQLite, FAISS and manifest agree), the store's cases against the
acknowledged writes, and the graph's cases of the index against the store's. Target: 0 lost, 0
duplicated, 0 out of step.

Usage: python -m kgreport.benchmarks.crash_safety [--out benchmarks/results/crash_safety.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.benchmarks.server_process import DEMO, free_port, wait_ready

IMAGE = DEMO / "queries" / "MPX1075_synpic20513.jpg"
REPORT = "Findings: Small right pleural effusion. No pneumothorax.\nImpression: Effusion."


def _cases_in_store(data_dir: Path) -> int:
    path = data_dir / "indexes" / "demo" / "store.sqlite"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2) as db:
            return int(db.execute("SELECT count(*) FROM cases").fetchone()[0])
    except sqlite3.Error:
        return 0


def _state(data_dir: Path) -> dict[str, Any]:
    """The index as it is on disk: its check, its case ids, and the graph's case ids (no reconcile)."""
    code = (
        "import json, sys\n"
        "from kgreport.usecases.settings import Settings\n"
        "from kgreport.usecases.services import Services\n"
        "from kgreport.retrieval.index_check import check_index\n"
        "s = Settings(data_dir=sys.argv[1]); services = Services(s)\n"
        "check = check_index(s.index_dir('demo'))\n"
        "store = services.open_store('demo')\n"
        "graph = services.graph.run('MATCH (k:Case {index: $i}) RETURN k.id AS id', {'i': 'demo'})\n"
        "print(json.dumps({'check_ok': check.ok, 'problems': check.problems, 'store': sorted(store.case_ids()),\n"
        "                  'graph': sorted(str(r['id']) for r in graph)}))\n"
        "services.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True, check=True)
    state: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    store, graph = set(state["store"]), set(state["graph"])
    state["graph_missing"] = sorted(store - graph)
    state["graph_extra"] = sorted(graph - store)
    return state


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kgreport.api.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def cli_build(env: dict[str, str], data_dir: Path) -> dict[str, Any]:
    build = _cli(env, "index", "build", str(DEMO), "--name", "demo")
    while (at_kill := _cases_in_store(data_dir)) < 20 and build.poll() is None:
        time.sleep(0.05)
    _kill(build.pid)
    build.wait()
    resumed = _cli(env, "index", "build", str(DEMO), "--name", "demo")
    resumed.wait()
    state = _state(data_dir)
    return {"cases_at_kill": at_kill, "resumed_exit_code": resumed.returncode, "cases_after": len(state["store"]),
            "expected": 60, "lost": 60 - len(state["store"]), **_verdict(state)}  # fmt: skip


def _verdict(state: dict[str, Any]) -> dict[str, Any]:
    return {"index_check_ok": state["check_ok"], "problems": state["problems"],
            "graph_missing": state["graph_missing"], "graph_extra": state["graph_extra"]}  # fmt: skip


class Service:
    """A `kgreport serve` process we can kill; its requests."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = _cli(env, "serve", "--port", str(self.port))
        wait_ready(self.base, self.process)
        self.client = httpx.Client(base_url=self.base, timeout=300)

    def add(self, case_id: str) -> int:
        files = {"images": ("scan.jpg", IMAGE.read_bytes(), "image/jpeg")}
        return self.client.post("/v1/indexes/demo/cases", data={"case_id": case_id, "report": REPORT},
                                files=files).status_code  # fmt: skip

    def delete(self, case_id: str) -> int:
        return self.client.delete(f"/v1/indexes/demo/cases/{case_id}").status_code

    def has(self, case_id: str) -> bool:
        return self.client.get(f"/v1/cases/{case_id}?index=demo").status_code == 200

    def stop(self, kill: bool = False) -> None:
        self.client.close()
        if kill:
            _kill(self.process.pid)
        else:
            self.process.terminate()
        self.process.wait(60)


def _writes(service: Service, prefix: str, adds: int, deletes: list[str]) -> tuple[list[str], list[str]]:
    """Acknowledged adds and deletes (201 / 200 only)."""
    added = [f"{prefix}-{n}" for n in range(adds) if service.add(f"{prefix}-{n}") == 201]
    deleted = [case_id for case_id in deletes if service.delete(case_id) == 200]
    return added, deleted


def service_kill(env: dict[str, str], data_dir: Path, victims: list[str]) -> dict[str, Any]:
    service = Service(env)
    added, deleted = _writes(service, "SVC", 5, victims)
    service.stop(kill=True)
    again = Service(env)
    lost = [c for c in added if not again.has(c)] + [c for c in deleted if again.has(c)]
    again.stop()
    state = _state(data_dir)
    return {"acknowledged_adds": len(added), "acknowledged_deletes": len(deleted), "lost": len(lost),
            "lost_ids": lost, **_verdict(state)}  # fmt: skip


def graph_kill(env: dict[str, str], data_dir: Path, victims: list[str]) -> dict[str, Any]:
    service = Service(env)
    added, deleted = _writes(service, "GRF", 3, victims)
    pid = int((data_dir / "graph" / "falkordb.pid").read_text().split()[0])
    _kill(pid)
    service.stop()  # the graph as it comes back from its own files, before any reconcile
    from_disk = _state(data_dir)
    again = Service(env)
    next_request = again.add("GRF-next")
    lost = [c for c in added if not again.has(c)] + [c for c in deleted if again.has(c)]
    again.stop()
    state = _state(data_dir)
    return {"acknowledged_adds": len(added), "acknowledged_deletes": len(deleted), "lost": len(lost),
            "graph_server_lost": {"missing": from_disk["graph_missing"], "extra": from_disk["graph_extra"]},
            "next_request_status": next_request, **_verdict(state)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "crash_safety.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir)}
        results: dict[str, Any] = {"cli_build": cli_build(env, data_dir)}
        print("cli_build", results["cli_build"], flush=True)
        stored = _state(data_dir)["store"]
        results["service"] = service_kill(env, data_dir, stored[:3])
        print("service", results["service"], flush=True)
        results["graph_server"] = graph_kill(env, data_dir, stored[3:5])
        print("graph_server", results["graph_server"], flush=True)
    total = sum(int(r["lost"]) + len(r["graph_missing"]) + len(r["graph_extra"]) for r in results.values())
    print(f"writes lost or out of step after recovery, all scenarios: {total}")
    write_result(args.out, {"scenarios": results, "lost_or_out_of_step": total})


if __name__ == "__main__":
    main()
