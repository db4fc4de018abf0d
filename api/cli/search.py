"""`kgreport search`: the most similar prior cases for query images or texts."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from kgreport.api.cli.printers import print_result
from kgreport.api.cli.support import CliError, load_services, user_errors
from kgreport.retrieval.config import SearchConfig


def search(
    queries: Annotated[
        list[Path] | None, typer.Argument(help="query images: PNG, JPEG, DICOM file or series folder, NIfTI")
    ] = None,
    text: Annotated[list[str] | None, typer.Option("--text", "-t", help="a text query (repeatable)")] = None,
    with_text: Annotated[str | None, typer.Option(help="text fused with every image query (hybrid search)")] = None,
    index: Annotated[str, typer.Option("--index", "-i", help="index name")] = "demo",
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="hits per query")] = SearchConfig.k,
    filter: Annotated[list[str] | None, typer.Option("--filter", "-f", help="KEY=VALUE metadata filter")] = None,
    per_image: Annotated[bool, typer.Option(help="list every matching image, not one hit per case")] = False,
    no_leakage_guard: Annotated[bool, typer.Option(help="allow hits from the query's own case/patient")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per query per line")] = False,
) -> None:
    """Find the most similar prior cases for each query image or text."""
    from kgreport.usecases.search import SearchRequest, search_cases

    with user_errors():
        ask = partial(SearchRequest, index, k=k, filters=_parse_filters(filter or []), per_image=per_image,
                      leakage_guard=not no_leakage_guard)  # fmt: skip
        requests = [ask(image=p, text=with_text) for p in (queries or [])] + [ask(text=t) for t in (text or [])]
        if not requests:
            raise CliError("give at least one query image or --text")
        services = load_services()
        for request in requests:
            result = search_cases(services, request)
            if as_json:
                sys.stdout.write(json.dumps(result.as_json()) + "\n")
                sys.stdout.flush()
            else:
                print_result(result)


def _parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"filter {item!r} is not KEY=VALUE")
        filters[key.strip()] = value.strip()
    return filters
