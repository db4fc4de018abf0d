"""The `kgreport` CLI on the bundled demo archive with the bundled encoder (real models)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kgreport.api.cli import app
from kgreport.generator.config import WriterConfig

pytestmark = pytest.mark.slow
runner = CliRunner()


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo index for the module, built through the CLI."""
    from kgreport.usecases.settings import get_settings

    data = tmp_path_factory.mktemp("kg")
    old = os.environ.get("KGREPORT_DATA_DIR")
    os.environ["KGREPORT_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    result = runner.invoke(app, ["index", "build", str(demo), "--name", "demo"])
    assert result.exit_code == 0, result.output
    yield data
    if old is None:
        os.environ.pop("KGREPORT_DATA_DIR", None)
    else:
        os.environ["KGREPORT_DATA_DIR"] = old
    get_settings.cache_clear()


def test_build_info_and_rebuild_without_duplicates(demo_index: Path) -> None:
    info = runner.invoke(app, ["index", "info", "demo"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    assert data["cases"] == 60 and data["images"] == 115
    again = runner.invoke(
        app, ["index", "build", str(Path(__file__).resolve().parents[2] / "data" / "demo"), "--name", "demo"]
    )
    assert again.exit_code == 0
    assert '"cases_already_present": 60' in again.output
    assert json.loads(runner.invoke(app, ["index", "info", "demo"]).output)["cases"] == 60


def test_search_json_lines(demo_index: Path) -> None:
    queries = sorted((Path(__file__).resolve().parents[2] / "data" / "demo" / "queries").glob("*.jpg"))
    result = runner.invoke(
        app, ["search", *map(str, queries[:2]), "--text", "lung mass", "--index", "demo", "-k", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = _json_lines(result.stdout)
    assert len(lines) == 3
    for line in lines:
        assert set(line) == {"query", "hits", "predicted"}
        assert len(line["hits"]) == 4
        assert set(line["hits"][0]) == {"case_id", "image_id", "score", "modality", "body_region", "report"}
        assert set(line["predicted"]) == {
            "modality",
            "modality_confidence",
            "body_region",
            "body_region_confidence",
            "location",
            "location_confidence",
        }
    assert lines[0]["predicted"]["modality"] == "CT"


def test_filters_and_leakage_guard(demo_index: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    stored = sorted((demo / "images").glob("*.jpg"))[0]
    own_case = stored.name.split("_")[0]
    guarded = _json_lines(runner.invoke(app, ["search", str(stored), "--index", "demo", "--json"]).stdout)[0]
    assert own_case not in {h["case_id"] for h in guarded["hits"]}
    unguarded = _json_lines(
        runner.invoke(app, ["search", str(stored), "--index", "demo", "--json", "--no-leakage-guard"]).stdout
    )[0]
    assert unguarded["hits"][0]["case_id"] == own_case
    mr = _json_lines(
        runner.invoke(app, ["search", str(stored), "--index", "demo", "--json", "-f", "modality=MR"]).stdout
    )[0]
    assert mr["hits"] and all(h["modality"] == "MR" for h in mr["hits"])


def _graph_case_findings(data_dir: Path, index: str, case_id: str) -> set[tuple[str, str]] | None:
    """(concept name, status) of a case in the data dir's graph; None when the graph has no such case."""
    from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB

    graph = EmbeddedFalkorDB(data_dir / "graph")
    try:
        if not graph.run("MATCH (k:Case {index: $index, id: $id}) RETURN k.id AS id", {"index": index, "id": case_id}):
            return None
        rows = graph.run(
            "MATCH (:Case {index: $index, id: $id})-[r:HAS_FINDING]->(c:Concept) RETURN c.name AS name, r.status AS s",
            {"index": index, "id": case_id},
        )
        return {(str(r["name"]).lower(), str(r["s"])) for r in rows}
    finally:
        graph.close()


def test_index_build_writes_findings_and_kg_ground_uses_them(demo_index: Path) -> None:
    grounded = runner.invoke(
        app, ["kg", "ground", "--text", "No pleural effusion. Possible mass.", "--index", "demo", "--json"]
    )
    assert grounded.exit_code == 0, grounded.output
    line = _json_lines(grounded.stdout)[0]
    assert set(line) == {"text", "findings", "concepts", "conflicts"}
    assert [f["status"] for f in line["findings"]] == ["absent", "uncertain"]
    mass = next(c for c in line["concepts"] if c["name"].lower() == "mass")
    assert mass["archive"]["index"] == "demo" and mass["archive"]["cases_total"] == 60
    assert mass["archive"]["cases"]["present"] > 0, "demo reports mention masses"
    assert mass["ancestors"] and mass["differential_diagnoses"]
    plain = runner.invoke(app, ["kg", "ground", mass["concept_id"], "RID0", "--index", "demo"])
    assert (
        plain.exit_code == 0 and "archive: present in" in plain.stdout and "unknown concept id 'RID0'" in plain.stdout
    )
    nothing = runner.invoke(app, ["kg", "ground"])
    assert nothing.exit_code == 2 and "CONCEPT_ID" in nothing.output


def test_add_and_delete_one_case(demo_index: Path) -> None:
    image = sorted((Path(__file__).resolve().parents[2] / "data" / "demo" / "queries").glob("*.jpg"))[0]
    added = runner.invoke(
        app,
        [
            "index",
            "add",
            "--name",
            "demo",
            "--case-id",
            "NEW1",
            "--report",
            "FINDINGS: right lower lobe consolidation.",
            "--image",
            str(image),
        ],
    )
    assert added.exit_code == 0, added.output
    assert json.loads(runner.invoke(app, ["index", "info", "demo"]).output)["cases"] == 61
    dup = runner.invoke(
        app, ["index", "add", "--name", "demo", "--case-id", "NEW1", "--report", "x", "--image", str(image)]
    )
    assert dup.exit_code == 2 and "already in index" in dup.output
    empty = runner.invoke(
        app, ["index", "add", "--name", "demo", "--case-id", "NEW2", "--report", " ", "--image", str(image)]
    )
    assert empty.exit_code == 2 and "empty report" in empty.output
    for bad in ("a/b", "..", "x\n"):  # the id rule the REST API keeps, kept here too
        refused = runner.invoke(
            app, ["index", "add", "--name", "demo", "--case-id", bad, "--report", "x", "--image", str(image)]
        )
        assert refused.exit_code == 2 and "invalid case id" in refused.output
    assert _graph_case_findings(demo_index, "demo", "NEW1") == {("consolidation", "present")}
    deleted = runner.invoke(app, ["index", "delete", "demo", "NEW1", "NOPE"])
    assert json.loads(deleted.output) == {"index": "demo", "deleted": ["NEW1"], "not_found": ["NOPE"]}
    assert json.loads(runner.invoke(app, ["index", "info", "demo"]).output)["cases"] == 60
    assert _graph_case_findings(demo_index, "demo", "NEW1") is None


def test_clear_errors(demo_index: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["search", "--text", "x", "--index", "nope"])
    assert missing.exit_code == 2 and "index 'nope' not found" in missing.output
    text_file = tmp_path / "scan.dcm"
    text_file.write_text("not dicom")
    wrong = runner.invoke(app, ["search", str(text_file), "--index", "demo"])
    assert wrong.exit_code == 2 and "scan.dcm" in wrong.output
    bad_name = runner.invoke(app, ["index", "info", "../etc"])
    assert bad_name.exit_code == 2 and "invalid index name" in bad_name.output


def test_dimension_mismatch_names_the_index(demo_index: Path, tmp_path: Path) -> None:
    """An index built with one encoder refuses queries from an encoder of another size."""
    from kgreport.retrieval.stores.local.store import CaseStore

    CaseStore.create(
        demo_index / "indexes" / "small",
        image_dim=8,
        text_dim=384,
        image_encoder="other",
        text_encoder="all-MiniLM-L6-v2",
    ).close()
    result = runner.invoke(app, ["search", "--text", "x", "--index", "small"])
    assert result.exit_code == 2 and "index 'small'" in result.output and "8-d" in result.output


def test_killed_build_process_resumes(tmp_path: Path) -> None:
    """SIGKILL a real `kgreport index build` mid-way; rerunning finishes it without duplicates."""
    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    env = {**os.environ, "KGREPORT_DATA_DIR": str(tmp_path), "KGREPORT_INGEST_BATCH_CASES": "4"}
    cmd = [sys.executable, "-m", "kgreport.api.cli", "index", "build", str(demo), "--name", "k"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "indexes" / "k" / "store.sqlite"
    deadline = time.time() + 120
    import sqlite3

    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("SELECT COUNT(*) FROM cases").fetchone()[0] >= 8:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["cases_already_present"] >= 8
    assert summary["info"]["cases"] == 60 and summary["info"]["images"] == 115
    from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB

    graph = EmbeddedFalkorDB(tmp_path / "graph")
    assert graph.run("MATCH (k:Case {index: 'k'}) RETURN count(k) AS n") == [{"n": 60}]
    graph.close()


def test_report_needs_a_trained_writer(demo_index: Path, tmp_path: Path) -> None:
    query = sorted((Path(__file__).resolve().parents[2] / "data" / "demo" / "queries").glob("*.jpg"))[0]
    missing = runner.invoke(app, ["report", str(query), "--index", "demo", "--generator", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no trained report writer" in missing.output


def test_train_generator_then_report(demo_index: Path, tmp_path: Path, tiny_llm: Path) -> None:
    """The wiring end to end on the tiny LLM: train two steps against the demo index, then write."""
    from kgreport.usecases.settings import get_settings

    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    os.environ["KGREPORT_LLM"] = str(tiny_llm)
    get_settings.cache_clear()
    try:
        trained = runner.invoke(
            app,
            [
                "train-generator", "--index", "demo", "--archive", str(demo), "--dev-split", "train",
                "--limit", "4", "--dev-limit", "2", "--max-steps", "2", "--eval-every", "1",
                "--out", str(tmp_path / "writer"),
            ],
        )  # fmt: skip
        assert trained.exit_code == 0, trained.output
        result = json.loads(trained.stdout)
        assert result["result"]["steps"] == 2 and result["train"]["examples"] >= 4
        card = (tmp_path / "writer" / "MODEL_CARD.md").read_text()
        assert "MedPix" in card and "Dev loss: best" in card
        # Going on from it: its dev loss is the first one the new run measures, and the card says so.
        more = runner.invoke(
            app,
            [
                "train-generator", "--index", "demo", "--archive", str(demo), "--dev-split", "train",
                "--limit", "4", "--dev-limit", "2", "--max-steps", "1", "--eval-every", "1",
                "--init", str(tmp_path / "writer"), "--out", str(tmp_path / "writer2"),
            ],
        )  # fmt: skip
        assert more.exit_code == 0, more.output
        dev_losses = json.loads(more.stdout)["result"]["dev_losses"]
        assert dev_losses[0] == [0, round(result["result"]["best_dev_loss"], 4)] and len(dev_losses) == 2
        assert "going on from" in (tmp_path / "writer2" / "MODEL_CARD.md").read_text()
        missing = runner.invoke(
            app,
            ["train-generator", "--index", "demo", "--archive", str(demo), "--init", str(tmp_path / "none")]
            + ["--out", str(tmp_path / "writer3")],
        )
        assert missing.exit_code == 2 and "no trained report writer" in missing.output
        query = sorted((demo / "queries").glob("*.jpg"))[0]
        written = runner.invoke(
            app,
            ["report", str(query), "--index", "demo", "--generator", str(tmp_path / "writer"), "--json"]
            + ["--max-new-tokens", "12"],
        )
        assert written.exit_code == 0, written.output  # babble from a two-step model: the draft, checked
        report = _json_lines(written.stdout)[0]
        assert {"findings", "impression", "gate", "evidence", "model", "limitations", "draft"} <= set(report)
        assert report["evidence"]["cases"] and (report["abstained"] or 0 <= report["gate"] <= 1)
        assert report["model"]["max_new_tokens"] == 12
        default = runner.invoke(app, ["report", str(query), "--index", "demo", "--generator", str(tmp_path / "writer")]
                                + ["--json"])  # fmt: skip
        assert default.exit_code == 0, default.output
        budget = WriterConfig.load(tmp_path / "writer").max_new_tokens
        assert _json_lines(default.stdout)[0]["model"]["max_new_tokens"] == budget, "as the REST answer: the config's"
        from_notes = runner.invoke(
            app,
            ["report", str(query), "--index", "demo", "--generator", str(tmp_path / "writer"), "--json"]
            + ["--max-new-tokens", "12", "--notes", "RLL consolidation, no PTX"],
        )
        assert from_notes.exit_code == 0, from_notes.output
        report = _json_lines(from_notes.stdout)[0]
        assert report["mode"] == "notes" and "right lower lobe" in report["draft"]["text"]
        assert "consolidation" in " ".join(s["sentence"] for s in report["findings"]).lower()
        mismatched = tmp_path / "mismatched"
        shutil.copytree(tmp_path / "writer", mismatched)
        config = json.loads((mismatched / "generator.json").read_text())
        config["fusion"]["image_dim"] = 999
        (mismatched / "generator.json").write_text(json.dumps(config))
        wrong = runner.invoke(app, ["report", str(query), "--index", "demo", "--generator", str(mismatched)])
        assert wrong.exit_code == 2 and "fuses 999/384-d image/text vectors" in wrong.output
        empty = runner.invoke(
            app, ["report", str(query), "--index", "demo", "--generator", str(tmp_path / "writer"), "--notes", "  "]
        )
        assert empty.exit_code == 2 and "notes are empty" in empty.output
        calibrated = runner.invoke(
            app,
            ["calibrate-writer", "--index", "demo", "--archive", str(demo), "--generator", str(tmp_path / "writer")]
            + ["--limit", "12"],
        )
        if calibrated.exit_code == 0:  # twelve drafts may all be unusable: then it says there is nothing to fit
            assert json.loads(calibrated.stdout)["fitted_on"] == 12
            assert (tmp_path / "writer" / "confidence.json").is_file()
        else:
            assert calibrated.exit_code == 2 and "nothing to calibrate" in calibrated.output
    finally:
        os.environ.pop("KGREPORT_LLM", None)
        get_settings.cache_clear()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_device_without_a_gpu_is_exit_code_2(demo_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgreport.usecases.settings import get_settings

    query = sorted((Path(__file__).resolve().parents[2] / "data" / "demo" / "queries").glob("*.jpg"))[0]
    monkeypatch.setenv("KGREPORT_DEVICE", "cuda")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["search", str(query), "--index", "demo"])
    finally:
        monkeypatch.delenv("KGREPORT_DEVICE")
        get_settings.cache_clear()
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2 and "KGREPORT_DEVICE" in said and "sees no CUDA GPU" in said


def test_quiet_and_verbose_exclude_each_other() -> None:
    done = runner.invoke(app, ["--quiet", "--verbose", "search", "--text", "lung mass"])
    assert done.exit_code == 2 and "exclude each other" in done.output


def test_quiet_drops_the_progress_and_keeps_the_results(demo_index: Path) -> None:
    from kgreport.api.cli.support import progress_console

    try:
        done = runner.invoke(app, ["--quiet", "search", "--text", "pleural effusion", "-k", "1", "--json"])
        assert done.exit_code == 0, done.output
        assert progress_console.quiet and json.loads(done.stdout.splitlines()[-1])["hits"]
    finally:
        progress_console.quiet = False  # the console outlives one command in this process
