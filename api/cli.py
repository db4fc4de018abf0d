"""`kgreport` command line: build and manage indexes, search similar cases, train the CT encoder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from api.services import Services
from api.settings import Settings, get_settings
from retrieval.records import Hit, SearchResult

if TYPE_CHECKING:
    from generator.report import Report

from api.cli_index import index_app
from api.cli_kg import kg_app, print_grounding
from api.cli_support import (
    CliError,
    console,
    ingest_with_progress,
    load_services,
    out,
    progress_bars,
    stage_progress,
    user_errors,
)

app = typer.Typer(
    help="Grounded radiology report drafting over your archive of prior cases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(index_app, name="index")
app.add_typer(kg_app, name="kg")


@app.command("search")
def search(
    queries: Annotated[
        list[Path] | None, typer.Argument(help="query images: PNG, JPEG, DICOM file or series folder, NIfTI")
    ] = None,
    text: Annotated[list[str] | None, typer.Option("--text", "-t", help="a text query (repeatable)")] = None,
    with_text: Annotated[str | None, typer.Option(help="text fused with every image query (hybrid search)")] = None,
    index: Annotated[str, typer.Option("--index", "-i", help="index name")] = "demo",
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="hits per query")] = 5,
    filter: Annotated[list[str] | None, typer.Option("--filter", "-f", help="KEY=VALUE metadata filter")] = None,
    per_image: Annotated[bool, typer.Option(help="list every matching image, not one hit per case")] = False,
    no_leakage_guard: Annotated[bool, typer.Option(help="allow hits from the query's own case/patient")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per query per line")] = False,
) -> None:
    """Find the most similar prior cases for each query image or text."""
    from retrieval.search import Query

    with user_errors():
        filters = _parse_filters(filter or [])
        all_queries = [Query(image=p, text=with_text) for p in (queries or [])]
        all_queries += [Query(text=t) for t in (text or [])]
        if not all_queries:
            raise CliError("give at least one query image or --text")
        searcher = load_services().searcher(index)
        for query in all_queries:
            result = searcher.search(
                query, k=k, filters=filters, per_image=per_image, leakage_guard=not no_leakage_guard
            )
            if as_json:
                sys.stdout.write(json.dumps(result.as_json()) + "\n")
                sys.stdout.flush()
            else:
                _print_result(result)


def _parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"filter {item!r} is not KEY=VALUE")
        filters[key.strip()] = value.strip()
    return filters


def _print_result(result: SearchResult) -> None:
    p = result.predicted
    out.print(
        f"[bold]{result.query}[/bold]\n  predicted: {p.modality} ({p.modality_confidence:.2f}), "
        f"{p.body_region} ({p.body_region_confidence:.2f})"
        + (f", {p.location} ({p.location_confidence:.2f})" if p.location else "")
    )
    for i, hit in enumerate(result.hits, 1):
        text = hit.report.split("Findings:", 1)[-1].split("\nDiagnosis:", 1)[0]
        snippet = " ".join(text.split())
        out.print(
            f"  {i}. [bold]{hit.score:.3f}[/bold] {hit.case_id} ({hit.modality or '?'}, {hit.body_region or '?'}) "
            f"{hit.image_id}",
            no_wrap=True,
            overflow="ellipsis",
        )
        out.print(f"     {snippet}", no_wrap=True, overflow="ellipsis", style="dim")


@app.command("train-generator")
def train_generator_cmd(
    index: Annotated[str, typer.Option("--index", "-i", help="index built from the training split")],
    archive: Annotated[Path, typer.Option(help="the archive (train and dev splits)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the trained report writer")],
    format: Annotated[str | None, typer.Option("--format")] = None,
    split: Annotated[str, typer.Option(help="training split")] = "train",
    dev_split: Annotated[str, typer.Option(help="split that picks the checkpoint")] = "dev",
    limit: Annotated[int | None, typer.Option(help="use only the first N training cases")] = None,
    dev_limit: Annotated[int | None, typer.Option(help="use only the first N dev cases")] = None,
    images_per_case: Annotated[int | None, typer.Option(min=1, help="use only the first N images of a case")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=10, help="retrieved cases per image")] = 5,
    prompt_budget: Annotated[int, typer.Option(min=64, help="tokens of evidence, draft and instruction")] = 320,
    kinds: Annotated[
        str, typer.Option(help="example kinds, comma-separated: edit, repair, notes")
    ] = "edit,repair,notes",
    drop_side: Annotated[float, typer.Option(min=0.0, max=0.5, help="chance to drop the image (and the texts)")] = 0.15,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda (bf16 autocast)")] = "auto",
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimiser steps")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(min=0, help="stop training after this many minutes (then dev picks the checkpoint as usual)"),
    ] = 80.0,
    eval_every: Annotated[int, typer.Option(min=1, help="dev loss every N steps")] = 100,
    lora_lr: Annotated[float, typer.Option()] = 3e-4,
    fusion_lr: Annotated[float, typer.Option()] = 1e-3,
    init: Annotated[
        Path | None, typer.Option(help="go on training this trained writer (its settings; its dev loss competes)")
    ] = None,
    save_examples: Annotated[
        Path | None, typer.Option(help="also write the examples (.npz) for `python -m generator.fit` elsewhere")
    ] = None,
    examples_only: Annotated[bool, typer.Option(help="build and save the examples, train nothing")] = False,
) -> None:
    """Train the refiner (fusion + LoRA) on an archive against its index; dev picks the checkpoint."""
    from api.reporting import train_generator
    from generator.config import WriterConfig
    from generator.fit import TrainConfig
    from generator.training import KINDS

    if examples_only and save_examples is None:
        raise typer.BadParameter("--examples-only needs --save-examples FILE", param_hint="--examples-only")
    chosen = tuple(x.strip() for x in kinds.split(",") if x.strip())
    if not chosen or set(chosen) - set(KINDS):
        raise typer.BadParameter(f"kinds must be among {', '.join(KINDS)}", param_hint="--kinds")

    with user_errors(), progress_bars() as bars:
        progress = stage_progress(bars)
        result = train_generator(
            load_services(),
            index=index,
            archive=archive,
            out_dir=out_dir,
            fmt=format,
            split=split,
            dev_split=dev_split,
            limit=limit,
            dev_limit=dev_limit,
            images_per_case=images_per_case,
            writer_config=WriterConfig(k=k, prompt_budget=prompt_budget),
            kinds=chosen,
            train_config=TrainConfig(
                drop_side=drop_side,
                device=device,
                epochs=epochs,
                batch_size=batch_size,
                max_steps=max_steps,
                max_minutes=max_minutes,
                eval_every=eval_every,
                lora_lr=lora_lr,
                fusion_lr=fusion_lr,
            ),
            init=init,
            save_examples_to=save_examples,
            examples_only=examples_only,
            progress=progress,
        )
    out.print_json(json.dumps(result))


@app.command("calibrate-writer")
def calibrate_writer_cmd(
    index: Annotated[str, typer.Option("--index", "-i", help="index built from the training split")],
    archive: Annotated[Path, typer.Option(help="the archive")],
    generator: Annotated[Path, typer.Option(help="trained refiner folder: its confidence.json is (re)written")],
    split: Annotated[str, typer.Option(help="split the confidence is fitted on (never the one you test on)")] = "train",
    limit: Annotated[int | None, typer.Option(help="use only the first N cases")] = None,
) -> None:
    """Fit the image-only draft's calibrated confidence for a trained refiner (the LLM is not trained)."""
    from api.reporting import calibrate_writer

    with user_errors(), progress_bars() as bars:
        progress = stage_progress(bars)
        result = calibrate_writer(
            load_services(), generator, index=index, archive=archive, split=split, limit=limit, progress=progress
        )
    out.print_json(json.dumps(result))


@app.command("report")
def report_cmd(
    images: Annotated[list[Path], typer.Argument(help="query images: PNG, JPEG, DICOM file or series folder, NIfTI")],
    index: Annotated[str, typer.Option("--index", "-i", help="index of prior cases")] = "demo",
    notes: Annotated[
        str | None,
        typer.Option(help='the radiologist\'s findings, shorthand allowed ("RUL 2cm nodule, no effusion"): notes mode'),
    ] = None,
    generator: Annotated[Path | None, typer.Option(help="trained refiner folder (default: bundled)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=8, max=512, help="default: the writer's config")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON report per line")] = False,
) -> None:
    """Write a grounded draft report for each image (from the image alone, or from --notes); models load once."""
    from api.reporting import open_report_writer

    with user_errors():
        writer = open_report_writer(load_services(), index, generator)
        for image in images:
            report = writer.write(image, notes, max_new_tokens=max_new_tokens)
            if as_json:
                sys.stdout.write(json.dumps({"image": str(image), **report.as_json()}) + "\n")
                sys.stdout.flush()
            else:
                print_report(image, report)


def print_report(image: Path, report: Report) -> None:
    """A report for a terminal: the draft's source, findings with citations, impression, differential."""
    gate = "" if report.gate is None else f"  gate {report.gate:.2f} (1 = image only, 0 = texts only)"
    confidence = "" if report.confidence is None else f"  confidence {report.confidence:.2f}"
    out.print(f"[bold]{image}[/bold]  mode {report.mode}{gate}{confidence}")
    if report.draft:
        source = f"case {report.draft['case_id']}" if report.draft["source"] == "case" else "your notes"
        out.print(f"[dim]draft from {source}[/dim]")
    if report.abstained:
        out.print(f"[yellow]{escape(report.impression)}[/yellow]")
        for c in report.candidates[:3]:
            out.print(f"  {c['case_id']} ({c['score']:.2f}): {escape(c['text'][:120])}", style="dim")
    else:
        out.print("[bold]Findings[/bold]")
        for s in report.findings:
            cites = ", ".join(s.cited_case_ids) or "no prior case"
            flag = "" if s.supported else f"  [red]unsupported: {', '.join(s.unsupported_concept_ids)}[/red]"
            tags = escape(f"[{s.status}; {cites}; {', '.join(s.concept_ids) or '-'}]")
            out.print(f"  {escape(s.sentence)}  [dim]{tags}[/dim]{flag}")
        for sentence in report.removed:
            out.print(f"  [strike dim]{escape(sentence)}[/strike dim]  [red](removed: unsupported)[/red]")
        out.print(f"[bold]Impression[/bold]\n  {escape(report.impression)}")
    for n, d in enumerate(report.differential, 1):
        sources = ", ".join([*d["case_ids"], *d["concept_ids"]]) or "-"
        out.print(f"  {n}. {escape(d['name'])}  [dim]{escape('[' + sources + ']')}[/dim]")
    for line in report.limitations:
        out.print(f"  [yellow]limitation:[/yellow] {escape(line)}")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="worker processes (default KGREPORT_WORKERS, 1); about one per core"),
    ] = None,
) -> None:
    """Run the REST API (OpenAPI at /docs and /openapi.json) and the web page at http://HOST:PORT/."""
    import uvicorn

    settings = get_settings()
    workers = workers or settings.workers
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key_set:
        console.print("[yellow]warning:[/yellow] listening beyond this machine without KGREPORT_API_KEYS set")
    console.print(
        f"kgreport on http://{host}:{port}/ (API docs: /docs; data dir {settings.data_dir}; {workers} worker(s))"
    )
    if workers == 1:
        from api.service.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    else:  # each worker process builds its app from the same environment (the settings object reads it)
        uvicorn.run(
            "api.service.app:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            # uvicorn restarts a worker that misses a 5 s health ping; loading the models, or a burst of
            # load on few cores, can hold a worker's interpreter that long.
            timeout_worker_healthcheck=60,
        )


@app.command("train-encoder")
def train_encoder_cmd(
    archive: Annotated[Path, typer.Argument(help="training archive (MedPix folder or manifest)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the trained encoder")],
    format: Annotated[str | None, typer.Option("--format")] = None,
    split: Annotated[str, typer.Option(help="training split (MedPix)")] = "train",
    dev_split: Annotated[str, typer.Option(help="split used to pick the best epoch")] = "dev",
    dev_archive: Annotated[
        Path | None, typer.Option(help="separate dev archive (default: ARCHIVE's dev split)")
    ] = None,
    model: Annotated[str, typer.Option(help="architecture config name or JSON path")] = "ct-mobilenetv2",
    init: Annotated[str, typer.Option(help="imagenet or scratch")] = "imagenet",
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimiser steps")] = None,
    limit: Annotated[int | None, typer.Option(help="use only the first N training cases")] = None,
    heads: Annotated[
        str,
        typer.Option(help="label heads, comma-separated, of modality, body_region, location, category, acr_pathology"),
    ] = "modality,body_region",
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5, help="label smoothing of the heads")] = 0.0,
    text_target: Annotated[
        str, typer.Option(help="caption (the image's legend) or report (diagnosis, legend, findings)")
    ] = "caption",
    group_by_region: Annotated[
        bool, typer.Option(help="draw each batch from one body region: other diseases as hard negatives")
    ] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")] = "auto",
) -> None:
    """Train the CT encoder contrastively on an archive's image–caption pairs (dev picks the epoch).

    About 14 minutes for 10 epochs of MedPix train (1,653 images) on 2 CPU cores."""
    from indexing.training.encoder_training import RICH_HEADS
    from indexing.training.run import run_training

    head_names = tuple(h.strip() for h in heads.split(",") if h.strip())
    with user_errors():
        unknown = sorted(set(head_names) - set(RICH_HEADS))
        if unknown:
            raise CliError(f"unknown heads {unknown}; choose from {', '.join(RICH_HEADS)}")
        summary = run_training(
            archive,
            out_dir,
            fmt=format,
            split=split,
            dev_split=dev_split,
            dev_archive=dev_archive,
            model=model,
            init=init,
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
            limit=limit,
            console=console,
            options={
                "heads": head_names,
                "label_smoothing": label_smoothing,
                "text_target": text_target,
                "group_by_region": group_by_region,
                "device": device,
            },
        )
    out.print_json(json.dumps(summary))


@app.command("demo")
def demo(
    k: Annotated[int, typer.Option("-k", min=1)] = 3,
) -> None:
    """The main job on embedded defaults: index the bundled demo archive, search its held-out images, ground
    the nearest case's findings and write a grounded draft report for the first one."""
    from retrieval.search import Query

    settings: Settings = get_settings()
    with user_errors():
        services = Services(settings)
        console.rule("kgreport demo")
        console.print(f"data dir: {settings.data_dir}")
        result = ingest_with_progress(
            services, "demo", settings.demo_archive, "medpix", "train", None, create=True,
            findings=settings.index_findings,
        )  # fmt: skip
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
            _print_result(res)
        res = searcher.search(Query(text="axial CT of the chest with a lung mass"), k=k)
        out.print("\ntext query")
        _print_result(res)
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
    from api.reporting import GeneratorNotFoundError, open_report_writer

    try:
        writer = open_report_writer(services, "demo")
    except GeneratorNotFoundError as err:
        out.print(f"\n[yellow]no report written:[/yellow] {err}")
        return
    out.print(f"\n[bold]grounded draft report, from the image alone[/bold] ({writer.model_info['writer']})")
    print_report(image, writer.write(image))
    out.print(f"\n[bold]the same image with the radiologist's notes[/bold]: {DEMO_NOTES!r}")
    print_report(image, writer.write(image, DEMO_NOTES))


def _print_demo_grounding(services: Services, hit: Hit) -> None:
    """The nearest prior case's findings, grounded in the ontology and the demo archive."""
    from knowledge.grounding import ground_findings
    from retrieval.report_sections import split_report

    findings = services.finding_extractor.extract(split_report(hit.report).findings)
    grounded = ground_findings(services.ontology_graph, findings, index="demo", limit=5)
    out.print(f"\n[bold]grounded findings of the nearest case {hit.case_id}[/bold]")
    for f in grounded.findings:
        out.print(f"  {f.status:<9} {f.concept_id:<18} {f.name} ({f.text!r})")
    for grounding in grounded.concepts[:3]:
        print_grounding(grounding)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
