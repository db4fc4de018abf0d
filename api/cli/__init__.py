"""`kgreport` command line: build and manage indexes, search similar cases, write reports, train models.

Each command lives in the module of its concern (`index`, `kg`, `search`, `report`, `train`, `serve`,
`demo`); this file only puts them on one Typer app. Known failures print one line and exit with code
2 (`support.user_errors`, over the error table in `api/error_table.py` that the REST service shares).
"""

from __future__ import annotations

from typing import Annotated

import typer

from kgreport.api.cli import demo, report, search, serve, train
from kgreport.api.cli.index import index_app
from kgreport.api.cli.kg import kg_app
from kgreport.api.cli.support import set_output

app = typer.Typer(
    help="Grounded radiology report drafting over your archive of prior cases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _output(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log what each step does")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or status lines")] = False,
) -> None:
    """Grounded radiology report drafting over your archive of prior cases."""
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    set_output(verbose=verbose, quiet=quiet)


app.add_typer(index_app, name="index")
app.add_typer(kg_app, name="kg")
app.command("search")(search.search)
app.command("report")(report.report_cmd)
app.command("train-generator")(train.train_generator_cmd)
app.command("calibrate-writer")(train.calibrate_writer_cmd)
app.command("train-encoder")(train.train_encoder_cmd)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)


def main() -> None:  # pragma: no cover
    app()
