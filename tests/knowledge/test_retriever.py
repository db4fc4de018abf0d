"""GroundingRetriever: a LangChain retriever over the real graph (and the real extractor for text)."""

from __future__ import annotations

import pytest
from langchain_core.retrievers import BaseRetriever

from kgreport.knowledge.archive import CaseFindings, write_cases
from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.graph import GraphBackend
from kgreport.knowledge.retriever import GroundingRetriever


def test_concept_ids_become_documents(small_graph: GraphBackend) -> None:
    write_cases(small_graph, "train", [CaseFindings("c1", (("OIFM_N", "present"),), diagnoses=("RID4000",))])
    retriever = GroundingRetriever(graph=small_graph, index="train")
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("OIFM_N RID0 RID1302")
    assert [d.metadata["concept_id"] for d in docs] == ["OIFM_N", "RID1302"]  # the unknown id is left out
    nodule = docs[0].page_content
    assert nodule.startswith("nodule [OIFM_N] (oifm)")
    assert "located in: lung" in nodule and "lung cancer (1 case)" in nodule
    assert docs[0].metadata["grounding"]["archive"]["cases"]["present"] == 1


def test_text_query_without_extractor_is_a_clear_error(small_graph: GraphBackend) -> None:
    with pytest.raises(ValueError, match="needs a finding extractor"):
        GroundingRetriever(graph=small_graph).invoke("a nodule in the lung")


@pytest.mark.slow
def test_text_query_grounds_each_finding(full_graph: GraphBackend, extractor: FindingExtractor) -> None:
    retriever = GroundingRetriever(graph=full_graph, extractor=extractor)
    docs = retriever.invoke("Pleural effusion on the right. No pleural effusion on the left. No pneumothorax.")
    by_name = {d.metadata["name"].lower(): d for d in docs}
    assert by_name["pleural effusion"].metadata["status"] == "conflicting"
    assert len(by_name["pleural effusion"].metadata["mentions"]) == 2
    assert by_name["pneumothorax"].metadata["status"] == "absent"
    assert "is a: " in by_name["pneumothorax"].page_content
    assert retriever.invoke("Der Befund ist unauffällig.") == []
