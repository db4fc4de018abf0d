"""How far the knowledge base can take the differential: does any stated finding reach the true diagnosis?

For each hand-written notes row (train and dev, as `benchmarks.differential_sources` collected them), the
knowledge base's ranking of the notes' findings (`DiagnosisRanker`, unlimited) is searched for the true
diagnosis or an accepted synonym (strictly, as `benchmarks.differential_quality` scores). "Reached" means
it is anywhere in the ranking: some stated finding matched a KB finding that suggests it. Whatever the
ranking's order, the knowledge base's top 5 cannot exceed its reach.

The same for a second matcher, tried as the lever the word matcher might be missing: stated findings and
KB findings both linked to RadLex/OIFM concepts by the extractor, a KB finding matching where the stated
finding holds at least half of its concepts' idf weight. And both rankings merged (scores normalised and
added). Besides, how many rows' true diagnosis is in the knowledge base at all.

    python -m kgreport.benchmarks.differential_reach
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from kgreport.benchmarks.differential_quality import right
from kgreport.benchmarks.differential_sources import NOTES
from kgreport.benchmarks.notes_quality import load_notes
from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.notes_findings import stated_findings
from kgreport.knowledge.extraction.notes_items import split_items
from kgreport.knowledge.ontology.diagnosis_kb import DiagnosisKB, diagnosis_key, read_diagnosis_kb
from kgreport.knowledge.ontology.diagnosis_ranking import DiagnosisRanker
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

MIN_CONCEPT_COVER = 0.5  # share of a KB finding's concept weight the stated finding must hold


class ConceptMatcher:
    """Diagnoses by shared ontology concepts between stated and KB findings (the extractor links both)."""

    def __init__(self, kb: DiagnosisKB, extract: Any) -> None:
        self.extract = extract
        texts = sorted({s.finding for s in kb.suggestions})
        self.concepts = {t: self.concepts_of(t) for t in texts}
        counts = Counter(c for cs in self.concepts.values() for c in cs)
        self.idf = {c: math.log(len(texts) / (1 + n)) for c, n in counts.items()}
        self.by_concept: dict[str, set[str]] = defaultdict(set)
        for text, cs in self.concepts.items():
            for c in cs:
                self.by_concept[c].add(text)
        self.edges = defaultdict(list)
        for s in kb.suggestions:
            if not s.negative:
                self.edges[s.finding].append(s)

    def concepts_of(self, text: str) -> frozenset[str]:
        return frozenset(f.concept_id for f in self.extract(text) if f.status != "absent")

    def rank(self, stated: Sequence[str]) -> list[tuple[str, float]]:
        score: dict[str, float] = defaultdict(float)
        for text in stated:
            held = self.concepts_of(text)
            best: dict[str, float] = defaultdict(float)
            for kb_text in set().union(*(self.by_concept[c] for c in held)) if held else set():
                own = self.concepts[kb_text]
                shared, total = sum(self.idf[c] for c in own & held), sum(self.idf[c] for c in own)
                if total <= 0 or shared / total < MIN_CONCEPT_COVER:
                    continue
                for edge in self.edges[kb_text]:
                    key = diagnosis_key(edge.diagnosis)
                    best[key] = max(best[key], shared * (2.0 if edge.pathognomonic else 1.0))
            for key, weight in best.items():
                score[key] += weight
        return sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))


def _position(keys: Sequence[str], kb: DiagnosisKB, truth: Sequence[str]) -> int | None:
    for i, key in enumerate(keys):
        d = kb.diagnoses.get(key)
        if d is not None and right(d.name, d.synonyms, truth):
            return i
    return None


def measure(rows: Sequence[Mapping[str, Any]], notes: Mapping[str, Mapping[str, Any]], kb: DiagnosisKB,
            words: DiagnosisRanker, concepts: ConceptMatcher) -> dict[str, Any]:  # fmt: skip
    positions: dict[str, list[int | None]] = {"words": [], "concepts": [], "merged": []}
    in_kb = []
    for row in rows:
        note = notes[row["case_id"]]
        stated = stated_findings(split_items(note["notes"], note["modality"]))
        ranked = words.rank(stated, modality=row["modality"], region=row["region"], limit=len(kb.diagnoses))
        by_words = {diagnosis_key(d.name): d.score for d in ranked}
        by_concepts = dict(concepts.rank([s.text for s in stated if s.status != "absent"]))
        top_w, top_c = max(by_words.values(), default=1.0) or 1.0, max(by_concepts.values(), default=1.0) or 1.0
        merged = sorted(set(by_words) | set(by_concepts),
                        key=lambda k: (-(by_words.get(k, 0) / top_w + by_concepts.get(k, 0) / top_c), k))  # fmt: skip
        positions["words"].append(_position(list(by_words), kb, row["truth"]))
        positions["concepts"].append(_position(list(by_concepts), kb, row["truth"]))
        positions["merged"].append(_position(merged, kb, row["truth"]))
        in_kb.append(any(right(d.name, d.synonyms, row["truth"]) for d in kb.diagnoses.values()))
    out: dict[str, Any] = {"cases": len(rows), "truth_in_kb": round(statistics.mean(in_kb), 4)}
    for name, found in positions.items():
        out[name] = {
            "reached": round(statistics.mean(p is not None for p in found), 4),
            "top5": round(statistics.mean(p is not None and p < 5 for p in found), 4),
        }
    return out


def main() -> None:
    kb = read_diagnosis_kb()
    extractor = Services(Settings()).finding_extractor
    words, concepts = DiagnosisRanker(kb), ConceptMatcher(kb, extractor.extract)
    result: dict[str, Any] = {}
    for split in ("train", "dev"):
        rows = json.loads((RESULTS / f"differential_sources_{split}.json").read_text())["rows"]
        notes = {r["case_id"]: r for r in load_notes(NOTES[split])}
        result[split] = measure(rows, notes, kb, words, concepts)
        print(split, json.dumps(result[split]))
    write_result(RESULTS / "differential_reach.json", result)


if __name__ == "__main__":
    main()
