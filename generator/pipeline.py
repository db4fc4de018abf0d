"""Image → grounded report: retrieve, collect evidence, write with the LLM, parse, cite, post-check.

Output the model writes that does not parse into Findings / Impression is written again with the
answer forced to start with "Findings:" (constrained decoding of the heading) and, when the impression
heading is still missing, with it forced after the findings; if that fails too the error says so and
shows what the model wrote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generator.evidence import EvidenceBuilder
from generator.model import Batch, ReportGenerator
from generator.report import Report, ReportParseError, build_report


class ReportGenerationError(RuntimeError):
    """The model's output could not be turned into a report, even with constrained decoding."""


@dataclass
class ReportWriter:
    generator: ReportGenerator
    evidence: EvidenceBuilder
    max_new_tokens: int = 120
    fixed_gate: float | None = None  # ablation: pin the fusion gate
    model_info: dict[str, Any] = field(default_factory=dict)
    # Seconds the last `write` spent per stage (evidence, generate, post-check), for benchmarks and logs.
    stages: dict[str, float] = field(default_factory=dict)

    def _generate(self, batch: Batch, prefix: str = "") -> tuple[str, float]:
        started = time.perf_counter()
        texts, gates = self.generator.generate(
            batch, max_new_tokens=self.max_new_tokens, fixed_gate=self.fixed_gate, prefix=prefix
        )
        self.stages["generate"] += time.perf_counter() - started
        return texts[0], gates[0]

    def write(self, image: Path) -> Report:
        started = time.perf_counter()
        vector, texts, mask, evidence, prompt = self.evidence.for_image(image)
        self.stages = {"evidence": time.perf_counter() - started, "generate": 0.0, "post_check": 0.0}
        batch = Batch(
            image=torch.tensor(vector[None], dtype=torch.float32),  # a copy: cached query vectors are read-only
            texts=torch.from_numpy(texts[None]).float(),
            mask=torch.from_numpy(mask[None]),
            prompts=[prompt.text],
        )
        attempts = []
        for prefix in ("", "Findings:"):
            text, gate = self._generate(batch, prefix)
            attempts.append(text)
            if prefix and "impression:" not in text.lower():
                text, gate = self._generate(batch, text.rstrip() + "\nImpression:")
                attempts.append(text)
            started = time.perf_counter()
            try:
                return build_report(
                    text,
                    evidence,
                    self.evidence.extractor,
                    gate=gate,
                    prompt=prompt,
                    model={**self.model_info, "constrained_retry": bool(prefix)},
                )
            except ReportParseError:
                continue
            finally:
                self.stages["post_check"] += time.perf_counter() - started
        shown = " | ".join(a[:160].replace("\n", " ") for a in attempts)
        raise ReportGenerationError(f"{image}: the model's output did not parse into a report: {shown}")
