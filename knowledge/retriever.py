"""Grounding facts as a LangChain retriever: a query (report text or concept ids) → one Document per concept.

Report text goes through the finding extractor and each finding's concept is grounded in the graph;
a query made only of concept ids ("RID1301 OIFM_GMTS_004244") is grounded directly. Each Document's
`page_content` is the readable fact block an LLM prompt can quote; its `metadata` holds the concept
id, the finding's status and text when it came from text, and the full grounding as plain data.
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from kgreport.knowledge.grounding import Grounding, ground_concepts, ground_findings

CONCEPT_ID_RE = re.compile(r"(RID\d+|OIFM_\w+)")  # fullmatch


def _document(grounding: Grounding, **extra: Any) -> Document:
    return Document(
        page_content="\n".join(grounding.facts()),
        metadata={
            "concept_id": grounding.concept_id,
            "name": grounding.name,
            **extra,
            "grounding": grounding.as_json(),
        },
    )


class GroundingRetriever(BaseRetriever):
    """Retrieves ontology and archive facts for the findings of a query.

    `graph` is a `knowledge.graph.GraphBackend` holding the ontology; `extractor` a `FindingExtractor`
    (needed only for text queries); `index` limits archive statistics to one index.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    graph: Any
    extractor: Any = None
    index: str | None = None
    limit: int = 10

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        words = query.split()
        if words and all(CONCEPT_ID_RE.fullmatch(w) for w in words):
            groundings = ground_concepts(self.graph, words, index=self.index, limit=self.limit)
            return [_document(g) for g in groundings if g.reason is None]
        if self.extractor is None:
            raise ValueError("a text query needs a finding extractor (GroundingRetriever(extractor=...))")
        grounded = ground_findings(self.graph, self.extractor.extract(query), index=self.index, limit=self.limit)
        by_id = {g.concept_id: g for g in grounded.concepts}
        documents = []
        for concept_id in by_id:
            mentions = [f for f in grounded.findings if f.concept_id == concept_id]
            status = "conflicting" if concept_id in grounded.conflicts else mentions[0].status
            documents.append(_document(by_id[concept_id], status=status, mentions=[f.as_json() for f in mentions]))
        return documents
