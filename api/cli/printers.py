"""What several commands print: a search result, a report, a grounding."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from kgreport.api.cli.support import out
from kgreport.retrieval.records import SearchResult

if TYPE_CHECKING:
    from kgreport.generator.report import Report
    from kgreport.knowledge.grounding import Grounding


def print_result(result: SearchResult) -> None:
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


def print_report(image: Path, report: Report) -> None:
    """A report for a terminal: the draft's source, findings with citations, impression, differential."""
    gate = "" if report.gate is None else f"  gate {report.gate:.2f} (1 = image only, 0 = texts only)"
    confidence = "" if report.confidence is None else f"  confidence {report.confidence:.2f}"
    out.print(f"[bold]{image}[/bold]  mode {report.mode}{gate}{confidence}")
    if report.draft:
        source = f"case {report.draft.case_id}" if report.draft.kind == "case" else "your notes"
        out.print(f"[dim]draft from {source}[/dim]")
    if report.abstained:
        out.print(f"[yellow]{escape(report.impression)}[/yellow]")
        for c in report.candidates[:3]:
            out.print(f"  {c.case_id} ({c.score:.2f}): {escape(c.text[:120])}", style="dim")
    else:
        out.print("[bold]Findings[/bold]")
        for s in report.findings:
            cites = ", ".join(s.cited_case_ids) or "no prior case"
            flag = "" if s.supported else f"  [red]unsupported: {', '.join(s.unsupported_concept_ids)}[/red]"
            item = f"notes item {s.notes_item}; " if s.notes_item is not None else ""
            tags = escape(f"[{item}{s.status}; {cites}; {', '.join(s.concept_ids) or '-'}]")
            out.print(f"  {escape(s.sentence)}  [dim]{tags}[/dim]{flag}")
        from kgreport.generator.report import split_removal

        for entry in report.removed:
            sentence, why = split_removal(entry)
            out.print(f"  [strike dim]{escape(sentence)}[/strike dim]  [red](removed: {escape(why)})[/red]")
        items = ", ".join(map(str, report.impression_items))
        cited = f"  [dim](notes items {items})[/dim]" if items else ""
        out.print(f"[bold]Impression[/bold]\n  {escape(report.impression)}{cited}")
    if report.differential_weights:
        weights = ", ".join(f"{s} {w:.2f}" for s, w in report.differential_weights.items())
        out.print(f"[bold]Differential[/bold]  [dim](weights on this case: {weights})[/dim]")
    for n, d in enumerate(report.differential, 1):
        sources = ", ".join([*d.case_ids, *d.concept_ids]) or "-"
        out.print(f"  {n}. {escape(d.name)}  [dim]{escape('[' + sources + ']')}[/dim]")
        for support in d.supports:
            why = f"{support.stated} → {support.kb_finding} ({support.source})"
            out.print(f"       [dim]explains {escape(why)}[/dim]")
        if d.unexplained:
            out.print(f"       [dim]does not explain: {escape('; '.join(d.unexplained))}[/dim]")
    for line in report.limitations:
        out.print(f"  [yellow]limitation:[/yellow] {escape(line)}")


def print_grounding(grounding: Grounding) -> None:
    head, *facts = grounding.facts()
    out.print(f"[yellow]{head}[/yellow]" if grounding.reason else f"[bold]{head}[/bold]")
    for line in facts:
        out.print(f"  {line}")
