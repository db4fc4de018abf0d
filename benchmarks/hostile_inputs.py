"""The service as an attacker or a careless client sees it: crafted requests against a real server.

Starts `kgreport serve` with API keys on, over a fresh data dir holding the demo index (60 cases),
and sends each probe below: wrong or missing keys, ids that break the id rule, path traversal in
every field that names a file, decompression bombs, truncated DICOM, bodies over the limit with and
without a Content-Length, deep JSON, injection payloads, oversized headers and ids; and round two
(issue 31): thousands of filters, DICOMs with malformed pixel transforms, paths no file system takes,
the security headers on the page and its files, CORS (off), one case with 1,000 images, unknown indexes. For each it
records the status and whether it is one of the statuses the probe allows. Afterwards it checks that
the server is still healthy, the demo index still holds its 60 cases and no upload was left behind,
and it counts answers that named a server path.

Target: 0 answers of 5xx, 0 unexpected statuses, 0 path leaks.

Usage: python -m kgreport.benchmarks.hostile_inputs [--out benchmarks/results/hostile_inputs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydicom.data import get_testdata_file

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.benchmarks.server_process import DEMO, REPO, build_demo_index, running_server
from kgreport.testkit.bombs import bomb_jpeg, bomb_nifti, bomb_png_rgb
from kgreport.testkit.malformed_dicom import malformed_dicoms

KEY = "hostile-test-key"
QUERY = DEMO / "queries" / "MPX1075_synpic20513.jpg"
BAD_IDS = ["a/b", ".", "..", "x\n", "nulA\x00B", "x" * 129, "with space", "ü", "a\\b", "", "../../etc/passwd"]


@dataclass
class Probe:
    """One crafted request and the statuses a correct server may answer it with."""

    name: str
    method: str
    path: str
    expect: set[int]
    kwargs: dict[str, Any] = field(default_factory=dict)
    keyed: bool = True
    headers_present: dict[str, str] = field(default_factory=dict)  # name: a substring its value must hold
    headers_absent: tuple[str, ...] = ()

    def accepts(self, status: int | None, headers: httpx.Headers) -> bool:
        """The status is one allowed, and the answer's headers are as required."""
        present = all(want in headers.get(name, "\x00") for name, want in self.headers_present.items())
        return status in self.expect and present and not any(name in headers for name in self.headers_absent)


def _png(side: int = 64) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunks(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _add_case(case_id: str, patient_id: str | None = None, image: bytes | None = None) -> dict[str, Any]:
    data = {"case_id": case_id, "report": "Findings: Small right pleural effusion."}
    if patient_id is not None:
        data["patient_id"] = patient_id
    return {"data": data, "files": {"images": ("a.png", image if image is not None else _png(), "image/png")}}


def probes(bombs: Path, upload_limit_mb: int) -> list[Probe]:
    """The battery; `bombs` is a folder for the generated bomb files."""
    dicom = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    query = QUERY.read_bytes()
    over = b"\x89PNG\r\n\x1a\n" + bytes(int((upload_limit_mb + 1) * 1e6))
    found: list[Probe] = []
    add = found.append

    # Auth on every data route.
    for method, path in [("GET", "/v1/indexes"), ("POST", "/v1/search"), ("GET", "/v1/cases/MPX1075?index=demo"),
                         ("DELETE", "/v1/indexes/demo/cases/MPX1075"), ("POST", "/v1/reports"),
                         ("GET", "/v1/concepts/RID5352"), ("GET", "/v1/jobs/0123456789abcdef"),
                         ("POST", "/v1/indexes")]:  # fmt: skip
        add(Probe(f"no key {method} {path}", method, path, {401}, keyed=False))
        add(Probe(f"wrong key {method} {path}", method, path, {401}, {"headers": {"X-API-Key": "nope"}}, keyed=False))

    # Ids, in forms and in paths.
    for bad in BAD_IDS:
        add(Probe(f"add case id {bad[:20]!r}", "POST", "/v1/indexes/demo/cases", {422}, _add_case(bad)))
        add(Probe(f"get case {bad[:20]!r}", "GET", f"/v1/cases/{quote(bad, safe='')}?index=demo", {404, 422}))
        add(
            Probe(
                f"index name {bad[:20]!r}",
                "POST",
                "/v1/indexes",
                {422},
                {"json": {"name": bad, "archive_path": str(DEMO)}},
            )
        )
    add(Probe("patient id with a slash", "POST", "/v1/indexes/demo/cases", {422}, _add_case("P-OK", "p/1")))
    add(Probe("x/thumbnail is case x's thumbnail", "GET", "/v1/cases/x/thumbnail?index=demo", {404}))

    # Paths that try to leave their root.
    for given in [
        "/etc",
        "/",
        "../../../etc",
        str(DEMO / ".." / ".." / ".."),
        "/proc/self",
        str(DEMO / "nothing-here"),
    ]:
        add(
            Probe(
                f"archive_path {given}",
                "POST",
                "/v1/indexes",
                {403, 404},
                {"json": {"name": "x", "archive_path": given}},
            )
        )
    for image_id in ["../../../../etc/passwd", "MPX1427/../../x", "/etc/passwd"]:
        add(
            Probe(
                f"thumbnail image_id {image_id}",
                "GET",
                f"/v1/cases/MPX1427/thumbnail?index=demo&image_id={image_id}",
                {404},
            )
        )
    add(Probe("job id traversal", "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", {404}))
    add(Probe("job id of 10,000 hex digits", "GET", "/v1/jobs/" + "ab" * 5000, {404}))
    add(Probe("unknown thumbnail window", "GET", "/v1/cases/MPX1427/thumbnail?index=demo&window=nope", {422}))

    # Uploads: bad types, truncation, bombs, the size limit with and without Content-Length.
    files = lambda name, data: {"files": {"image": (name, data)}}  # noqa: E731
    add(Probe("text as an image", "POST", "/v1/search", {415}, files("notes.txt", b"hello")))
    add(Probe("empty file", "POST", "/v1/search", {415, 422}, files("empty.png", b"")))
    add(
        Probe(
            "PNG signature, then junk",
            "POST",
            "/v1/search",
            {422},
            files("junk.png", b"\x89PNG\r\n\x1a\n" + os.urandom(4096)),
        )
    )
    add(Probe("truncated DICOM", "POST", "/v1/search", {422}, files("cut.dcm", dicom[: len(dicom) // 2])))
    add(Probe("DICOM header only", "POST", "/v1/search", {422}, files("head.dcm", dicom[:200])))
    add(Probe("JPEG named .nii.gz", "POST", "/v1/search", {200, 415, 422}, files("x.nii.gz", query)))
    add(
        Probe(
            "PNG bomb 13000² RGB",
            "POST",
            "/v1/search",
            {422},
            files("bomb.png", bomb_png_rgb(bombs / "b.png").read_bytes()),
        )
    )
    add(
        Probe(
            "JPEG claiming 13000²",
            "POST",
            "/v1/search",
            {422},
            files("bomb.jpg", bomb_jpeg(bombs / "b.jpg").read_bytes()),
        )
    )
    add(
        Probe(
            "NIfTI 1024x1024x512",
            "POST",
            "/v1/search",
            {200, 422},
            files("bomb.nii.gz", bomb_nifti(bombs / "b.nii.gz").read_bytes()),
        )
    )
    add(Probe("over the limit, Content-Length", "POST", "/v1/search", {413}, files("big.png", over)))
    multipart = httpx.Request("POST", "http://x/v1/indexes/demo/cases", **_add_case("BIG-1", image=over))
    chunked = {"content": _chunks(multipart.read()), "headers": {"content-type": multipart.headers["content-type"]}}
    add(Probe("over the limit, chunked multipart", "POST", "/v1/indexes/demo/cases", {413}, chunked))
    big_json = json.dumps({"text": "x", "filters": {"pad": "y" * int((upload_limit_mb + 1) * 1e6)}}).encode()
    add(Probe("over the limit, chunked JSON", "POST", "/v1/search", {413},
              {"content": _chunks(big_json), "headers": {"content-type": "application/json"}}))  # fmt: skip

    # JSON and form fields.
    js = lambda body: {"content": body, "headers": {"content-type": "application/json"}}  # noqa: E731
    add(Probe("invalid JSON", "POST", "/v1/search", {422}, js(b"{not json")))
    add(
        Probe(
            "JSON nested 100,000 deep",
            "POST",
            "/v1/search",
            {422},
            js(b'{"text": "x", "filters": ' + b"[" * 100_000 + b"}"),
        )
    )
    add(
        Probe(
            "filters nested 100,000 deep (form)",
            "POST",
            "/v1/search",
            {422},
            {**files("q.jpg", query), "data": {"filters": "[" * 100_000}},
        )
    )
    add(Probe("k = -1", "POST", "/v1/search", {422}, {"json": {"text": "mass", "k": -1}}))
    add(Probe("k = 10^9", "POST", "/v1/search", {422}, {"json": {"text": "mass", "k": 10**9}}))
    add(Probe("text of 1 MB", "POST", "/v1/search", {422}, {"json": {"text": "mass " * 200_000}}))
    add(Probe("NUL and unicode in text", "POST", "/v1/search", {200}, {"json": {"text": "mass\x00 ü 中文 \u202e"}}))
    for payload in ["MATCH (n) DETACH DELETE n", "'; DROP TABLE cases; --", "x') OR 1=1 --", "${jndi:ldap://x}"]:
        add(Probe(f"payload in text {payload[:16]!r}", "POST", "/v1/search", {200}, {"json": {"text": payload}}))
        add(
            Probe(
                f"payload as filter key {payload[:16]!r}",
                "POST",
                "/v1/search",
                {200, 422},
                {"json": {"text": "mass", "filters": {payload: "CT"}}},
            )
        )
        add(Probe(f"payload as concept id {payload[:16]!r}", "GET", f"/v1/concepts/{payload}", {404, 422}))
    add(
        Probe(
            "filter on a metadata key",
            "POST",
            "/v1/search",
            {200},
            {"json": {"text": "mass", "filters": {"modality": "CT"}}},
        )
    )
    add(
        Probe(
            "wrong content type",
            "POST",
            "/v1/search",
            {415},
            {"content": b"x", "headers": {"content-type": "text/plain"}},
        )
    )
    add(
        Probe(
            "report with empty notes", "POST", "/v1/reports", {422}, {**files("q.jpg", query), "data": {"notes": "   "}}
        )
    )
    add(
        Probe(
            "report on an unknown index",
            "POST",
            "/v1/reports",
            {404},
            {**files("q.jpg", query), "data": {"index": "nope"}},
        )
    )
    add(
        Probe(
            "report with max_new_tokens 10^6",
            "POST",
            "/v1/reports",
            {422},
            {**files("q.jpg", query), "data": {"max_new_tokens": "1000000"}},
        )
    )

    found += round_two_probes(query)

    # Protocol: methods, routes, headers.
    add(Probe("PUT on indexes", "PUT", "/v1/indexes", {405}))
    add(Probe("unknown route", "GET", "/v1/../../etc/passwd", {404}))
    add(Probe("100 KB header", "GET", "/v1/indexes", {200, 400, 431}, {"headers": {"X-Junk": "a" * 100_000}}))
    add(
        Probe(
            "2,000 headers", "GET", "/v1/indexes", {200, 400, 431}, {"headers": {f"X-H{i}": "v" for i in range(2000)}}
        )
    )
    return found


def round_two_probes(query: bytes) -> list[Probe]:
    """What an independent probe of the service found (issue 31): large filters, malformed pixel transforms,
    paths no file system takes, browser-facing headers, CORS, one case with 1,000 images, unknown indexes."""
    files = lambda name, data: {"files": {"image": (name, data)}}  # noqa: E731
    found: list[Probe] = []
    add = found.append
    for count in (999, 5000):
        many = {f"k{i}": "v" for i in range(count)}
        add(
            Probe(
                f"{count} filter keys (text)", "POST", "/v1/search", {422}, {"json": {"text": "mass", "filters": many}}
            )
        )
        add(Probe(f"{count} filter keys (image)", "POST", "/v1/search", {422},
                  {**files("q.jpg", query), "data": {"filters": json.dumps(many)}}))  # fmt: skip
    add(Probe("a filter of 999 values", "POST", "/v1/search", {422},
              {"json": {"text": "mass", "filters": {"case_id": [f"MPX{i}" for i in range(999)]}}}))  # fmt: skip
    add(Probe("a filter value of 100 KB", "POST", "/v1/search", {422},
              {"json": {"text": "mass", "filters": {"modality": "C" * 100_000}}}))  # fmt: skip
    for what, data in malformed_dicoms().items():
        add(Probe(f"DICOM: {what} (search)", "POST", "/v1/search", {422}, files("bad.dcm", data)))
        add(Probe(f"DICOM: {what} (render)", "POST", "/v1/render", {422}, files("bad.dcm", data)))
    for given in ["a\x00b", "~nosuchuser/x", str(DEMO) + "/" + "a" * 300]:
        add(Probe(f"archive_path {given[:24]!r}", "POST", "/v1/indexes", {403, 404, 422},
                  {"json": {"name": "x", "archive_path": given}}))  # fmt: skip
    for url in ["dicomweb+http://[::1", "dicomweb+http://pacs:99999/rs", "dicomweb+http://a:b@pacs/rs"]:
        add(Probe(f"PACS URL {url}", "POST", "/v1/indexes", {422}, {"json": {"name": "x", "archive_path": url}}))
    add(Probe("archive format 'pacs'", "POST", "/v1/indexes", {422},
              {"json": {"name": "x", "archive_path": str(DEMO), "format": "pacs"}}))  # fmt: skip
    guarded = {"content-security-policy": "frame-ancestors 'none'", "x-content-type-options": "nosniff"}
    page_policy = {**guarded, "content-security-policy": "script-src 'self';"}
    for path in ["/", "/static/app.js", "/static/style.css", "/static/nothing.js"]:
        add(Probe(f"security headers on {path}", "GET", path, {200, 404}, keyed=False, headers_present=page_policy))
    add(Probe("security headers on a JSON error", "GET", "/v1/indexes", {401}, keyed=False, headers_present=guarded))
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    add(Probe("CORS preflight (CORS off)", "OPTIONS", "/v1/search", {405}, {"headers": preflight}, keyed=False,
              headers_absent=("access-control-allow-origin",)))  # fmt: skip
    add(Probe("cross-origin read (CORS off)", "GET", "/v1/indexes", {200}, {"headers": {"Origin": "https://evil.example"}},
              headers_absent=("access-control-allow-origin",)))  # fmt: skip
    tiny = _png(4)
    thousand = {"data": {"case_id": "MANY-1", "report": "Findings: Small right pleural effusion."},
                "files": [("images", (f"{i}.png", tiny, "image/png")) for i in range(1000)]}  # fmt: skip
    add(Probe("one case with 1,000 images", "POST", "/v1/indexes/demo/cases", {422}, thousand))
    for path in ["/v1/concepts/RID5352?index=nosuch", "/v1/cases/MPX1427?index=nosuch",
                 "/v1/cases/MPX1427/thumbnail?index=nosuch"]:  # fmt: skip
        add(Probe(f"unknown index: {path}", "GET", path, {404}))
    return found


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _send(client: httpx.Client, probe: Probe) -> tuple[int | None, str, httpx.Headers]:
    kwargs = dict(probe.kwargs)
    headers = {"X-API-Key": KEY, **kwargs.pop("headers", {})} if probe.keyed else kwargs.pop("headers", {})
    try:
        answer = client.request(probe.method, probe.path, headers=headers, **kwargs)
        return answer.status_code, answer.text, answer.headers
    except httpx.HTTPError as err:  # a dropped connection is a failure of its own
        return None, f"{type(err).__name__}: {err}", httpx.Headers()


def run(out: Path, upload_limit_mb: int = 4) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        bombs = Path(tmp) / "bombs"
        bombs.mkdir()
        env = {**os.environ, "KGREPORT_DATA_DIR": str(data_dir), "KGREPORT_MAX_UPLOAD_MB": str(upload_limit_mb)}
        build_demo_index(env, data_dir)
        battery = probes(bombs, upload_limit_mb)
        results: list[dict[str, Any]] = []
        with running_server({**env, "KGREPORT_API_KEYS": KEY}, 1) as (server, port):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
                for probe in battery:
                    peak_before = _peak_rss_mb(server.pid)
                    status, text, headers = _send(client, probe)
                    leaked = str(data_dir) in text or str(REPO) in text or tmp in text
                    added = round(_peak_rss_mb(server.pid) - peak_before, 1)
                    ok = probe.accepts(status, headers)
                    results.append({"probe": probe.name, "status": status, "expected": sorted(probe.expect),
                                    "ok": ok, "path_leak": leaked, "server_peak_rss_added_mb": added})  # fmt: skip
                    if not ok or leaked:
                        print(f"  UNEXPECTED {probe.name}: {status} (expected {sorted(probe.expect)}) {text[:200]}")
                health = client.get("/healthz").status_code
                listed = client.get("/v1/indexes", headers={"X-API-Key": KEY}).json()["indexes"]
            alive = server.poll() is None
        cases = next((i.get("cases") for i in listed if i["name"] == "demo"), None)
        uploads = data_dir / "uploads"
        leftovers = (
            sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.is_file()) if uploads.exists() else []
        )
    statuses = Counter(str(r["status"]) for r in results)
    unexpected = [r for r in results if not r["ok"]]
    leaks = [r["probe"] for r in results if r["path_leak"]]
    server_errors = sum(1 for r in results if r["status"] is not None and r["status"] >= 500)
    summary: dict[str, Any] = {
        "probes": len(results),
        "statuses": dict(sorted(statuses.items())),
        "server_errors_5xx": server_errors,
        "dropped_connections": statuses.get("None", 0),
        "unexpected": unexpected,
        "path_leaks": leaks,
        "bomb_peak_rss_added_mb": {
            r["probe"]: r["server_peak_rss_added_mb"]
            for r in results
            if "bomb" in r["probe"].lower() or "13000" in r["probe"] or "1024x1024" in r["probe"]
        },
        "after": {"server_alive": alive, "healthz": health, "demo_cases": cases, "uploads_left": leftovers},
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "unexpected"}, indent=1))
    print(f"{len(results)} probes: {server_errors} 5xx, {len(unexpected)} unexpected, {len(leaks)} path leaks")
    write_result(out, {**summary, "results": results, "upload_limit_mb": upload_limit_mb})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "hostile_inputs.json")
    run(parser.parse_args().out)


if __name__ == "__main__":
    main()
