"""`kgreport serve`: the REST API and the web page."""

from __future__ import annotations

from typing import Annotated

import typer

from kgreport.api.cli.support import console
from kgreport.usecases.settings import get_settings


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
        from kgreport.api.service.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    else:  # each worker process builds its app from the same environment (the settings object reads it)
        uvicorn.run(
            "kgreport.api.service.app:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            # uvicorn restarts a worker that misses a 5 s health ping; loading the models, or a burst of
            # load on few cores, can hold a worker's interpreter that long.
            timeout_worker_healthcheck=60,
        )
