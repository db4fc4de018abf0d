"""Choosing the image-only draft among retrieved reports, its confidence features, and their calibration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kgreport.generator.confidence import Calibration, fit_calibration
from kgreport.generator.config import WriterConfig
from kgreport.generator.evidence import CaseEvidence, Evidence, ImageEvidence, Statement
from kgreport.generator.refine import FEATURES, choose_draft, supported_concepts
from kgreport.retrieval.records import Hit

REPORTS = {
    "C1": ("Large left renal mass.", "Renal cell carcinoma", ("RID_MASS",)),
    "C2": ("Right pleural effusion. Lung mass.", "Lung cancer", ("RID_EFF", "RID_MASS")),
    "C3": ("Small right pleural effusion.", "Heart failure", ("RID_EFF",)),
}


def _found(order: tuple[str, ...] = ("C1", "C2", "C3")) -> ImageEvidence:
    hits = tuple(
        Hit(
            cid, f"{cid}_1", 0.9 - 0.1 * n, "CT", "Thorax", f"Findings: {REPORTS[cid][0]}\nDiagnosis: {REPORTS[cid][1]}"
        )
        for n, cid in enumerate(order)
    )
    cases = tuple(
        CaseEvidence(cid, 0.9, REPORTS[cid][0], statements=tuple(Statement(c, c, "present") for c in REPORTS[cid][2]))
        for cid in order
    )
    return ImageEvidence(
        np.zeros(4, np.float32), np.zeros((3, 2), np.float32), np.ones(3, bool), hits, Evidence(cases, ())
    )


def test_consensus_or_nearest_and_the_features() -> None:
    config = WriterConfig(k=3)
    consensus = choose_draft(_found(), config)
    assert consensus.chosen.case_id in {"C2", "C3"}, "the two effusion reports echo each other, not the renal one"
    assert consensus.source.kind == "case" and consensus.source.case_id == consensus.chosen.case_id
    assert consensus.source.text.startswith("Findings: ") and "Impression: " in consensus.source.text
    assert set(consensus.features) == set(FEATURES) and consensus.features["top_score"] == pytest.approx(0.9)
    nearest = choose_draft(_found(), replace(config, draft_selection="top1"))
    assert nearest.chosen.case_id == "C1" and nearest.features["supported_share"] == 1.0  # its mass: C1 and C2
    by_caption = choose_draft(_found(), replace(config, draft_selection="image_text"), [0.1, 0.2, 0.6])
    assert by_caption.chosen.case_id == "C3" and by_caption.features["image_text"] == 0.6
    assert supported_concepts(_found().evidence, 2) == {"RID_MASS", "RID_EFF"}
    assert supported_concepts(_found().evidence, 3) == set()
    with pytest.raises(ValueError, match="no retrieved case"):
        choose_draft(replace(_found(), hits=()), config)


def test_calibration_orders_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for _ in range(400):
        agreement = float(rng.uniform())
        rows.append(
            {
                "top_score": float(rng.uniform()),
                "agreement": agreement,
                "supported_share": 0.5,
                "score_gap": 0.1,
                "image_text": 0.2,
            }
        )
        labels.append(bool(rng.uniform() < agreement))  # the event's true probability is the agreement
    calibration = fit_calibration(rows, labels)
    low, high = ({**rows[0], "agreement": a} for a in (0.1, 0.9))
    assert calibration.probability(low) < 0.3 < 0.7 < calibration.probability(high)
    predicted = [calibration.probability(r) for r in rows]
    assert abs(float(np.mean(predicted)) - float(np.mean(labels))) < 0.02, "calibrated on average"
    calibration.save(tmp_path)
    assert Calibration.load(tmp_path) == calibration and Calibration.load(tmp_path / "none") is None
    with pytest.raises(ValueError, match="labels"):
        fit_calibration(rows, labels[:-1])


def test_writer_config_round_trip_and_legacy(tmp_path: Path) -> None:
    config = WriterConfig(k=4, abstain_below=0.3)
    config.save(tmp_path)
    assert WriterConfig.load(tmp_path) == config
    legacy = WriterConfig.load(tmp_path / "old", {"evidence": {"k": 3, "prompt_budget_tokens": 384}})
    assert (legacy.k, legacy.prompt_budget, legacy.repetition_penalty) == (3, 384, 1.2)
    (tmp_path / "writer.json").write_text('{"k": 3, "mystery": 1}')
    with pytest.raises(ValueError, match="mystery"):
        WriterConfig.load(tmp_path)
    with pytest.raises(ValueError, match="draft_selection"):
        WriterConfig(draft_selection="best")
