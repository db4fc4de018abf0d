"""`kgreport report`: a grounded draft report per image, from the image alone or with notes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from kgreport.api.cli.printers import print_report
from kgreport.api.cli.support import load_services, open_writer, user_errors


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
    from kgreport.usecases.reporting import ReportRequest, write_report

    with user_errors():
        writer = open_writer(load_services(), index, generator)
        for image in images:
            request = ReportRequest(image, notes, max_new_tokens=max_new_tokens)
            report = write_report(writer, index, request).report
            if as_json:
                sys.stdout.write(json.dumps({"image": str(image), **report.as_json()}) + "\n")
                sys.stdout.flush()
            else:
                print_report(image, report)
