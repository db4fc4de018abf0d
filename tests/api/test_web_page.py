"""The web page in a real browser: headless Chromium (Debian's, no download) driven by Playwright.

A real uvicorn server on a free loopback port serves the API and the page over a demo index; the
browser uploads a held-out image, views it, finds similar cases, writes the draft report (or sees the
abstention), follows a citation and a candidate draft, edits the text and exports JSON; then writes the report
from typed notes (notes mode: the refiner's changes, the differential) and sees blank notes refused. All of it
under the service's Content-Security-Policy, with no violation. The last screen is kept as
test-artifacts/web_page.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from kgreport.api.service.app import create_app
from kgreport.generator.pipeline import ABSTAIN_TEXT
from kgreport.testkit.servers import free_port
from kgreport.usecases.ingest import IngestRequest, ingest_archive
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
QUERY = REPO / "data" / "demo" / "queries" / "MPX1075_synpic20513.jpg"
CHROMIUM = os.environ.get("KGREPORT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"
NOTES = "RUL 2cm spiculated nodule, no effusion, mediastinal LAD"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("web"))
    services = Services(settings)
    ingest_archive(services, IngestRequest("demo", REPO / "data" / "demo"))
    services.open_store("empty", create=True).flush()  # no prior case: a real abstention
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
        # The page runs under the service's Content-Security-Policy: every violation is recorded, none allowed.
        page.add_init_script(
            "window.cspViolations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if "Content Security Policy" in m.text else None)
        try:
            opened = page.goto(server + "/")
            assert opened is not None and "script-src 'self'" in opened.headers["content-security-policy"]
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

            # An index with no prior case: the writer abstains rather than invent a draft.
            page.get_by_test_id("index").select_option("empty")
            page.get_by_test_id("write-report").click()
            status = page.get_by_test_id("status")
            expect(status).to_contain_text("draft withheld", timeout=120_000)
            expect(page.get_by_test_id("abstained")).to_have_text(ABSTAIN_TEXT)
            expect(page.get_by_test_id("findings")).to_be_hidden()
            expect(page.get_by_test_id("gate")).to_contain_text("none")
            page.get_by_test_id("index").select_option("demo")

            page.get_by_test_id("write-report").click()  # image only: a retrieved draft refined, or an abstention
            expect(status).to_contain_text(re.compile("draft written|draft withheld"), timeout=300_000)
            expect(page.get_by_test_id("mode")).to_contain_text("image mode")
            expect(page.get_by_test_id("gate")).to_contain_text("gate")
            findings = page.get_by_test_id("findings").locator("li")
            candidates = page.get_by_test_id("candidates").locator("li")
            expect(page.get_by_test_id("changes")).to_be_attached()
            abstained = "withheld" in status.inner_text()
            if abstained:
                expect(page.get_by_test_id("abstained")).to_be_visible()
                expect(page.get_by_test_id("abstained")).not_to_be_empty()
                expect(page.get_by_test_id("findings")).to_be_hidden()
            else:
                expect(page.get_by_test_id("abstained")).to_be_hidden()
                # A finding, or (the post-check took out every sentence as unsupported) a notice saying so.
                if findings.count() == 0:
                    expect(page.get_by_test_id("no-findings")).to_be_visible()
                    assert page.get_by_test_id("changes").locator(".removed li").count() >= 1
                expect(page.get_by_test_id("impression")).not_to_be_empty()
                assert 1 <= candidates.count() <= 3
                expect(candidates.filter(has_text="selected draft")).to_have_count(1)
                expect(page.get_by_test_id("gate")).to_contain_text(re.compile(r"gate [01]\.\d\d"))
            statuses = findings.locator(".status").all_inner_texts()
            assert set(statuses) <= {"present", "absent", "uncertain", "none"}  # none: states no finding
            cited = page.get_by_test_id("cite-case")
            if cited.count():
                cited.first.click()
                expect(page.get_by_test_id("detail")).to_contain_text("case ")
                page.get_by_test_id("detail-close").click()  # the panel floats over the draft column
            if candidates.count():
                candidate = candidates.first.get_by_test_id("candidate-case")
                case_id = candidate.inner_text()
                candidate.click()
                expect(page.get_by_test_id("detail")).to_contain_text(f"case {case_id}")
                page.get_by_test_id("detail-close").click()

            editor = page.get_by_test_id("report-text")
            assert editor.input_value().startswith("Findings:")
            editor.fill(editor.input_value() + "\nReviewed by the radiologist.")
            with page.expect_download() as download:
                page.get_by_test_id("export-json").click()
            exported = json.loads(Path(download.value.path()).read_text())
            assert exported["edited_text"].endswith("Reviewed by the radiologist.")
            assert exported["mode"] == "image" and exported["notes"] is None
            assert {"draft", "differential", "removed", "candidates"} <= exported.keys()
            assert exported["abstained"] == abstained
            assert abstained or ((exported["findings"] or exported["removed"]) and 0 <= exported["gate"] <= 1)

            # Notes mode: the radiologist's shorthand written out; the refiner's edits are shown as a diff.
            page.get_by_test_id("notes").fill(NOTES)
            page.get_by_test_id("write-report").click()
            expect(status).to_contain_text("draft written from your notes", timeout=300_000)
            expect(page.get_by_test_id("mode")).to_contain_text("notes mode")
            expect(page.get_by_test_id("abstained")).to_be_hidden()
            expect(page.get_by_test_id("differential")).to_be_attached()
            expect(page.get_by_test_id("changes")).to_contain_text("written from your notes")
            written = findings.count() + page.get_by_test_id("changes").locator(".removed li").count()
            assert written >= 1  # every sentence is either kept as a finding or listed as removed
            if findings.count() == 0:
                expect(page.get_by_test_id("no-findings")).to_be_visible()
            with page.expect_download() as download:
                page.get_by_test_id("export-json").click()
            exported = json.loads(Path(download.value.path()).read_text())
            assert exported["mode"] == "notes" and exported["notes"] == NOTES
            assert exported["draft"]["source"] == "notes"
            differential = page.get_by_test_id("differential").locator("li")
            assert differential.count() == len(exported["differential"])
            if exported["differential_weights"]:  # the weight each source got on this case, as the answer says
                expect(page.get_by_test_id("differential-weights")).to_contain_text("differential weights on this case")
            if differential.count():
                expect(differential.first).to_contain_text(exported["differential"][0]["name"])
            concept = page.get_by_test_id("differential").get_by_test_id("differential-concept")
            if concept.count():
                concept.first.click()
                expect(page.get_by_test_id("detail")).to_contain_text(f"({concept.first.inner_text()})")
                page.get_by_test_id("detail-close").click()

            # Blank notes are refused by the server (422 bad_notes), and the page says so next to the box.
            page.get_by_test_id("notes").fill("   ")
            page.get_by_test_id("write-report").click()
            expect(status).to_contain_text("report failed")
            expect(status).to_have_class("error")
            expect(page.get_by_test_id("notes-error")).to_be_visible()
            expect(page.get_by_test_id("notes-error")).to_contain_text("notes")
            expect(page.get_by_test_id("mode")).to_contain_text("notes mode")  # the last report stays shown
            assert page.evaluate("window.cspViolations") == [] and console_errors == [], console_errors
        finally:
            page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
            browser.close()
