"""What the service holds for its lifetime: settings, loaded models and stores, jobs, the report writer."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field

from fastapi import Request
from threadpoolctl import threadpool_limits

from kgreport.api.service.jobs import JobRunner
from kgreport.generator.pipeline import ReportWriter
from kgreport.usecases.reporting import LoadedWriter, load_report_writer, writer_for_index
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    services: Services
    jobs: JobRunner = field(init=False)
    # One LLM, one report at a time: parallel generation on a few cores is only slower for everyone.
    report_lock: threading.Lock = field(default_factory=threading.Lock)
    _loaded: LoadedWriter | None = None
    _writers: dict[str, ReportWriter] = field(default_factory=dict)
    _load_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.jobs = JobRunner(self.settings.shared_root / "jobs")

    def warm_up(self) -> None:
        """Load the encoders now and tune the process for many small concurrent requests.

        - numpy's BLAS on one thread: a request's matrix products are small, and BLAS threads that
          spin while other requests run doubled the CPU time of a search under load.
        - The loaded models' objects are moved out of the garbage collector's sight (`gc.freeze`):
          full collections otherwise walk them again and again, and each walk stalls every request
          (cached image search p99 at 20 clients: about 450 ms; 210 ms with the collector off).
        An encoder that fails to load is left to `/readyz` to report; the server still starts.
        """
        threadpool_limits(limits=1, user_api="blas")
        try:
            _ = self.services.image_encoder, self.services.text_encoder
        except Exception as err:  # a bad encoder path: /readyz says so, and search answers 503/500 with it
            log.warning("encoders not loaded at start-up: %s", err)
        gc.freeze()

    def writer(self, index: str) -> ReportWriter:
        """The report writer over `index`; the model is loaded on first use and shared by all indexes."""
        with self._load_lock:
            if self._loaded is None:
                self._loaded = load_report_writer(self.services)
                gc.freeze()  # the LLM's objects too (see warm_up)
            if index not in self._writers:
                self._writers[index] = writer_for_index(self.services, index, self._loaded)
            return self._writers[index]

    def close(self) -> None:
        self.jobs.shutdown()
        self.services.close()


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.kgreport
    return state


async def get_state(request: Request) -> ServiceState:
    """The route dependency: `async` so FastAPI calls it on the event loop (a sync one costs a thread hop)."""
    return service_state(request)
