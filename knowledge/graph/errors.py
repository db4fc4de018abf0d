"""Errors of the graph layer: they name the backend and the address, so an operator knows where to look."""

from kgreport.errors import Unavailable


class GraphUnavailableError(Unavailable, RuntimeError):
    """The graph server cannot be reached (or started)."""

    code = "graph_unavailable"

    def __init__(self, backend: str, address: str, reason: str) -> None:
        super().__init__(f"{backend} graph at {address} is unavailable: {reason}")
        self.backend = backend
        self.address = address
