"""One typed config for how a report is written: retrieval depth, prompt budget, draft choice, decoding, abstention.

It is saved as `writer.json` beside a trained refiner (training and inference then agree on every number)
and read back by `WriterConfig.load`; a writer folder from before it existed gets the settings it was
trained with (`legacy`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from kgreport.errors import SettingError, Unavailable
from kgreport.json_types import UncheckedJson

WRITER_JSON = "writer.json"
DRAFT_SELECTIONS = ("consensus", "top1", "image_text")


# Settings older writers saved that no longer mean anything: read and ignored. The differential's
# case_weight / graph_weight gave way to per-case source weights (`generator.source_weights`).
RETIRED_SETTINGS = frozenset({"case_weight", "graph_weight"})


class WriterUnreadableError(Unavailable, ValueError):
    """A trained writer's file that this version cannot read (unknown settings, unknown sources)."""

    code = "report_writer_unreadable"


@dataclass(frozen=True)
class WriterConfig:
    k: int = 5  # retrieved cases: draft candidates, finding votes, the fusion's text side
    prompt_budget: int = 320  # tokens of evidence, draft and instruction
    case_words: int = 12  # words of each prior case shown in the prompt
    findings_words: int = 60  # a draft's or reference's findings, cut to this
    impression_words: int = 20
    max_new_tokens: int = 140
    draft_selection: str = "consensus"  # "consensus" (agreement among candidates), "top1" (nearest), "image_text"
    lexical_weight: float = 0.5  # consensus: ROUGE-L versus finding overlap
    min_votes: int = 2  # image mode: cases that must state a finding before the report may state it
    refine_with_llm: bool = True  # False: the chosen draft (or the notes) goes through the post-check unedited
    notes_with_llm: bool = True  # notes mode only: False writes the expanded notes out as the findings, no LLM
    drop_unsupported: bool = True  # remove sentences stating an unsupported finding (the edits list them)
    abstain_below: float | None = None  # calibrated draft confidence under which the report abstains
    max_notes_chars: int = 2000
    notes_case_support: bool = False  # notes mode: may a finding the similar cases state stand without the notes?
    differential_size: int = 5
    differential_cases: int = 10  # differential: similar cases each retrieval source votes with
    repetition_penalty: float = 1.0  # a refiner copies: penalising repeats would garble the draft
    no_repeat_ngram: int = 0
    lookup_tokens: int = 10  # draft-lookup speculative decoding: tokens proposed per forward (0 = off)

    def __post_init__(self) -> None:
        if self.draft_selection not in DRAFT_SELECTIONS:
            raise SettingError(f"draft_selection must be one of {DRAFT_SELECTIONS}, not {self.draft_selection!r}")
        if self.k < 0 or self.prompt_budget < 16 or self.max_new_tokens < 1:
            raise SettingError(f"invalid writer config: k={self.k}, prompt_budget={self.prompt_budget}")

    def save(self, folder: Path) -> None:
        (folder / WRITER_JSON).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path, card: UncheckedJson | None = None) -> WriterConfig:
        """The folder's `writer.json`; else the evidence settings in its training card (an older writer)."""
        path = folder / WRITER_JSON
        if path.is_file():
            data = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            data = {k: v for k, v in data.items() if k not in RETIRED_SETTINGS}
            unknown = sorted(set(data) - known)
            if unknown:
                raise WriterUnreadableError(f"{path}: unknown writer settings {unknown}")
            return cls(**data)
        return cls.legacy(card or {})

    @classmethod
    def legacy(cls, card: UncheckedJson) -> WriterConfig:
        evidence = card.get("evidence", {})
        return replace(
            cls(),
            k=int(evidence.get("k", 3)),
            prompt_budget=int(evidence.get("prompt_budget_tokens", 384)),
            case_words=32,
            max_new_tokens=120,
            repetition_penalty=1.2,
            no_repeat_ngram=3,
        )


@dataclass
class TrainConfig:
    """How the writer is fitted (`generator.fit.train`): the one record of the training defaults."""

    epochs: int = 1
    batch_size: int = 4
    lora_lr: float = 3e-4
    fusion_lr: float = 1e-3
    weight_decay: float = 0.01
    max_steps: int | None = None
    eval_every: int = 100
    seed: int = 0
    # Dev loss before the first step too: a run that goes on from a trained writer keeps it unless it improves.
    evaluate_at_start: bool = False
    drop_side: float = 0.15  # per example: image dropped with this probability, texts with the same
    device: str = "auto"  # auto (CUDA when present), cpu or cuda; CUDA runs in bf16 autocast
    max_minutes: float | None = None  # stop (and evaluate) once this much time has passed: a lent GPU's lease
