"""Three hand-written prior cases shared by the evidence and report tests."""

from __future__ import annotations

from kgreport.generator.evidence import CaseEvidence

PRIOR_CASES = (
    CaseEvidence("MPX1", 0.91, "Large right pleural effusion. No pneumothorax.", modality="CT", body_region="Thorax"),
    CaseEvidence("MPX2", 0.85, "Small pleural effusion.", modality="CT", body_region="Thorax"),
    CaseEvidence("MPX3", 0.80, "No pleural effusion. Lung mass.", modality="CT", body_region="Thorax"),
)
