"""`kgreport demo`: the main job on embedded defaults, end to end on the bundled demo archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kgreport.api.cli.printers import print_grounding, print_report, print_result
from kgreport.api.cli.support import console, ingest_with_progress, open_writer, out, user_errors
from kgreport.retrieval.config import SearchConfig
from kgreport.retrieval.records import Hit, SearchResult
from kgreport.usecases.ingest import IngestRequest
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings, get_settings


def demo(
    k: Annotated[int, typer.Option("-k", min=1, help="similar cases shown")] = SearchConfig.k,
) -> None:
    """The main job on embedded defaults: index the bundled demo archive, search its held-out images, ground
    the nearest case's findings and write a grounded draft report for the first one."""
    from kgreport.retrieval.search import Query

    settings: Settings = get_settings()
    with user_errors():
        services = Services(settings)
        console.rule("kgreport demo")
        console.print(f"data dir: {settings.data_dir}")
        request = IngestRequest("demo", settings.demo_archive, "medpix", findings=settings.index_findings)
        result = ingest_with_progress(services, request)
        console.print(
            f"index [bold]demo[/bold]: {result['info']['cases']} cases, {result['info']['images']} "
            f"images ({result['cases_added']} added now, {result['cases_already_present']} already there)"
        )
        searcher = services.searcher("demo")
        queries_dir = settings.demo_archive / "queries"
        truth = {
            json.loads(line)["image"]: json.loads(line)
            for line in (queries_dir / "queries.jsonl").read_text().splitlines()
            if line.strip()
        }
        first: SearchResult | None = None
        first_path: Path | None = None
        for path in sorted(queries_dir.glob("*.jpg")):
            info = truth.get(path.stem, {})
            res = searcher.search(Query(image=path), k=k)
            first, first_path = first or res, first_path or path
            out.print(
                f"\nheld-out query {path.name} (truth: {info.get('Type')}, {info.get('Location Category')}; "
                f"caption: {(info.get('Description') or {}).get('Caption', '')[:80]})"
            )
            print_result(res)
        res = searcher.search(Query(text="axial CT of the chest with a lung mass"), k=k)
        out.print("\ntext query")
        print_result(res)
        if first is not None and first.hits and settings.index_findings:
            _print_demo_grounding(services, first.hits[0])
        if first_path is not None:
            _print_demo_report(services, first_path)
        console.print(
            "\nnext: `kgreport search IMAGE --index demo --json`, `kgreport kg ground --text TEXT --index demo`, "
            "`kgreport report IMAGE --index demo --json`, `kgreport index info demo`; the web page: "
            "`kgreport serve`, then open http://127.0.0.1:8000/"
        )


DEMO_NOTES = "RUL 2cm spiculated nodule, no effusion, mediastinal LAD"


def _print_demo_report(services: Services, image: Path) -> None:
    """The bundled report writer's grounded draft for the first held-out image."""
    from kgreport.usecases.reporting import GeneratorNotFoundError, ReportRequest, write_report

    try:
        writer = open_writer(services, "demo")
    except GeneratorNotFoundError as err:
        out.print(f"\n[yellow]no report written:[/yellow] {err}")
        return
    out.print(f"\n[bold]grounded draft report, from the image alone[/bold] ({writer.model_info['writer']})")
    print_report(image, write_report(writer, "demo", ReportRequest(image)).report)
    out.print(f"\n[bold]the same image with the radiologist's notes[/bold]: {DEMO_NOTES!r}")
    print_report(image, write_report(writer, "demo", ReportRequest(image, DEMO_NOTES)).report)


def _print_demo_grounding(services: Services, hit: Hit) -> None:
    """The nearest prior case's findings, grounded in the ontology and the demo archive."""
    from kgreport.knowledge.grounding import ground_findings
    from kgreport.retrieval.report_sections import split_report

    findings = services.finding_extractor.extract(split_report(hit.report).findings)
    grounded = ground_findings(services.ontology_graph, findings, index="demo", limit=5)
    out.print(f"\n[bold]grounded findings of the nearest case {hit.case_id}[/bold]")
    for f in grounded.findings:
        out.print(f"  {f.status:<9} {f.concept_id:<18} {f.name} ({f.text!r})")
    for grounding in grounded.concepts[:3]:
        print_grounding(grounding)
