"""Similar-case search as one typed use case: a `SearchRequest` in, the retrieval's `SearchResult` out,
built alike by `kgreport search` and `POST /v1/search`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kgreport.retrieval.records import SearchResult
from kgreport.retrieval.search import Query
from kgreport.usecases.services import Services


@dataclass(frozen=True)
class SearchRequest:
    """One query against one index: an image, a text, or both (a hybrid query).

    `k` None is the settings' `search_k`; `leakage_guard` None is the searcher's rule (hits from the
    query's own case or patient are left out when the query is a stored image)."""

    index: str
    image: Path | None = None
    text: str | None = None
    k: int | None = None
    filters: dict[str, str] = field(default_factory=dict)  # metadata key → value, all must match
    per_image: bool = False  # every matching image, not one hit per case
    leakage_guard: bool | None = None

    def query(self) -> Query:
        return Query(image=self.image, text=self.text)


def search_cases(services: Services, request: SearchRequest) -> SearchResult:
    """The most similar prior cases for `request` (an unknown index is `IndexNotFoundError`)."""
    return services.searcher(request.index).search(
        request.query(),
        request.k,
        filters=request.filters,
        per_image=request.per_image,
        leakage_guard=request.leakage_guard,
    )
