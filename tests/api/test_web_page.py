"""The web page in a real browser: headless Chromium (Debian's, no download) driven by Playwright.

A real uvicorn server on a free loopback port serves the API and the page over a demo index; the
browser uploads a held-out image, views it, finds similar cases, writes the draft report, follows a
citation, edits the text and exports JSON. The last screen is kept as test-artifacts/web_page.png.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from api.operations import ingest_archive
from api.service.app import create_app
from api.services import Services
from api.settings import Settings
from tests.api.servers import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
QUERY = REPO / "data" / "demo" / "queries" / "MPX1075_synpic20513.jpg"
CHROMIUM = os.environ.get("KGREPORT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("web"))
    services = Services(settings)
    ingest_archive(services, "demo", REPO / "data" / "demo", create=True)
    services.close()
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(30)


def test_upload_search_report_edit_export(server: str) -> None:
    if CHROMIUM is None:
        pytest.fail("no Chromium: install Debian's `chromium` (make test does) or set KGREPORT_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        try:
            page.goto(server + "/")
            expect(page.get_by_test_id("index")).to_contain_text("demo (60 cases)")
            page.get_by_test_id("image").set_input_files(str(QUERY))
            expect(page.locator("#preview-note")).to_have_text(QUERY.name)
            assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth") > 0
            page.get_by_test_id("window").select_option("lung")  # re-renders; a JPEG is shown as is
            expect(page.locator("#preview-note")).to_have_text(QUERY.name)

            page.get_by_test_id("search").click()
            hits = page.get_by_test_id("hits").locator("li")
            expect(hits).to_have_count(5)
            expect(page.get_by_test_id("status")).to_have_text("5 similar cases")
            expect(page.get_by_test_id("predicted")).to_contain_text("predicted:")
            page.wait_for_function("[...document.querySelectorAll('#hits img')].every(i => i.naturalWidth > 0)")

            page.get_by_test_id("write-report").click()
            expect(page.get_by_test_id("status")).to_contain_text("draft written", timeout=180_000)
            expect(page.get_by_test_id("gate")).to_contain_text("gate ")
            findings = page.get_by_test_id("findings").locator("li")
            assert findings.count() >= 1
            expect(page.get_by_test_id("impression")).not_to_be_empty()
            statuses = findings.locator(".status").all_inner_texts()
            assert set(statuses) <= {"present", "absent", "uncertain", "none"}  # none: states no finding
            cited = page.get_by_test_id("cite-case")
            if cited.count():
                cited.first.click()
                expect(page.get_by_test_id("detail")).to_contain_text("case ")

            editor = page.get_by_test_id("report-text")
            assert editor.input_value().startswith("Findings:")
            editor.fill(editor.input_value() + "\nReviewed by the radiologist.")
            with page.expect_download() as download:
                page.get_by_test_id("export-json").click()
            exported = json.loads(Path(download.value.path()).read_text())
            assert exported["edited_text"].endswith("Reviewed by the radiologist.")
            assert exported["findings"] and 0 <= exported["gate"] <= 1
        finally:
            page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
            browser.close()
