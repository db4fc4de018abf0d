"""`kgreport kg ...`: load the ontology graph, inspect it, extract findings, ground concepts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from kgreport.api.cli.printers import print_grounding
from kgreport.api.cli.support import CliError, load_services, out, progress_bars, user_errors
from kgreport.usecases.services import Services
from kgreport.usecases.settings import get_settings

kg_app = typer.Typer(help="The ontology graph: load it, inspect it.", no_args_is_help=True)


@kg_app.command("load")
def kg_load(
    radlex: Annotated[Path | None, typer.Option(help="RadLex CSV (default: the bundled copy)")] = None,
    finding_models: Annotated[Path | None, typer.Option(help="finding models JSONL (default: bundled)")] = None,
    backend: Annotated[str | None, typer.Option(help="falkordb or neo4j (default: neo4j if a URI is set)")] = None,
) -> None:
    """Load RadLex, the Open Imaging Finding Models and the finding → diagnosis knowledge base
    (radiology-semantic-dict) into the graph (idempotent)."""
    from kgreport.knowledge.ontology.diagnosis_loader import load_diagnosis_kb
    from kgreport.knowledge.ontology.loader import LOAD_STEPS, load_ontology

    with user_errors():
        services = _graph_services(backend)
        folder = services.settings.ontology_dir
        with progress_bars() as progress:
            task = progress.add_task("loading ontology", total=LOAD_STEPS + 1)
            summary = load_ontology(
                services.graph,
                radlex or folder / "radlex.csv.gz",
                finding_models or folder / "finding_models.jsonl.gz",
                progress=lambda step, n: progress.advance(task),
            )
            diagnoses = load_diagnosis_kb(services.graph)
            progress.advance(task)
        where = {"backend": services.graph.name, "address": services.graph.address}
        out.print_json(json.dumps({**where, **summary.as_json(), "diagnosis_kb": diagnoses.as_json()}))
        services.close()


@kg_app.command("info")
def kg_info(backend: Annotated[str | None, typer.Option(help="falkordb or neo4j")] = None) -> None:
    """Counts of concepts, finding models, edges and cases in the graph."""
    from kgreport.knowledge.ontology.loader import ontology_counts

    with user_errors():
        services = _graph_services(backend)
        counts = ontology_counts(services.graph)
        out.print_json(json.dumps({"backend": services.graph.name, "address": services.graph.address, **counts}))
        services.close()


@kg_app.command("findings")
def kg_findings(
    texts: Annotated[list[str] | None, typer.Argument(help="report texts")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="one report per line")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per report")] = False,
) -> None:
    """Findings in report text: ontology concept, status (present/absent/uncertain), location."""
    with user_errors():
        reports = list(texts or [])
        if file is not None:
            reports += [
                line for line in file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
            ]
        if not reports:
            raise CliError("give report TEXT arguments or --file")
        extractor = load_services().finding_extractor
        for text, findings in zip(reports, extractor.extract_many(reports), strict=True):
            if as_json:
                sys.stdout.write(json.dumps({"text": text, "findings": [f.as_json() for f in findings]}) + "\n")
            else:
                out.print(f"[bold]{text[:100]}[/bold]")
                for f in findings:
                    where = f" @ {f.location_concept_id}" if f.location_concept_id else ""
                    out.print(f"  {f.status:<9} {f.concept_id:<18} {f.name} ({f.text!r}){where}")


@kg_app.command("ground")
def kg_ground(
    concept_ids: Annotated[list[str] | None, typer.Argument(help="RadLex RIDs or finding-model ids")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", "-t", help="report text to ground (repeatable)")] = None,
    index: Annotated[str | None, typer.Option("--index", "-i", help="archive statistics of this index only")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="items per list")] = 10,
    backend: Annotated[str | None, typer.Option(help="falkordb or neo4j")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per concept / per text")] = False,
) -> None:
    """Ancestors, locations, related findings, differential diagnoses and archive statistics.

    Give concept ids, or report text with --text: its findings are extracted and each is grounded,
    with the conflicts among them (a concept stated both present and absent).
    """
    from kgreport.knowledge.grounding import ground_concepts, ground_findings

    with user_errors():
        if not concept_ids and not text:
            raise CliError("give CONCEPT_ID arguments or --text")
        services = _graph_services(backend)
        graph = services.ontology_graph
        for grounding in ground_concepts(graph, concept_ids or [], index=index, limit=limit):
            if as_json:
                sys.stdout.write(json.dumps(grounding.as_json()) + "\n")
            else:
                print_grounding(grounding)
        reports = list(text or [])
        for report, findings in zip(
            reports, services.finding_extractor.extract_many(reports) if reports else [], strict=True
        ):
            grounded = ground_findings(graph, findings, index=index, limit=limit)
            if as_json:
                sys.stdout.write(json.dumps({"text": report, **grounded.as_json()}) + "\n")
                continue
            out.print(f"[bold]{report[:100]}[/bold]")
            for f in grounded.findings:
                out.print(f"  {f.status:<9} {f.concept_id:<18} {f.name} ({f.text!r})")
            if grounded.conflicts:
                out.print(f"  [red]conflicts (present and absent):[/red] {', '.join(grounded.conflicts)}")
            for grounding in grounded.concepts:
                print_grounding(grounding)
        services.close()


def _graph_services(backend: str | None) -> Services:
    settings = get_settings()
    if backend not in (None, "falkordb", "neo4j"):
        raise CliError(f"unknown graph backend {backend!r}: falkordb or neo4j")
    if backend == "neo4j" and not settings.neo4j_uri:
        raise CliError("--backend neo4j needs KGREPORT_NEO4J_URI (and _USER, _PASSWORD)")
    if backend == "falkordb":
        settings = settings.model_copy(update={"neo4j_uri": ""})
    return Services(settings)
