"""radiology-semantic-dict's finding → diagnosis tables, read and checked (the differential's knowledge base)."""

from kgreport.knowledge.ontology.diagnosis_kb import (
    diagnosis_key,
    finding_key,
    modalities,
    read_diagnosis_kb,
    split_diagnosis,
)


def test_the_three_tables_are_read_with_provenance_and_what_is_wrong_is_counted() -> None:
    kb = read_diagnosis_kb()
    sources = {s.source.split(":")[1] for s in kb.suggestions}
    assert sources == {"imaging_findings", "differential_groups", "imaging_signs"}
    assert len(kb.suggestions) > 9000 and len(kb.diagnoses) > 1500
    assert kb.dropped["not an imaging finding (no modality)"] > 0  # "IgG4 >135 mg/dL on lab results"
    assert kb.dropped["a measurement, not a finding"] > 0  # "SUVmax", "Tumor HU"
    assert kb.dropped["a task, not a finding"] > 0 and kb.dropped["a normal study, not a finding"] > 0
    findings = {finding_key(s.finding) for s in kb.suggestions}
    assert not findings & {"suvmax", "tumor hu", "t1 signal", "polyp detection", "direct visualization", "normal ct"}
    assert kb.dropped["the diagnosis restated"] > 0  # "Osteoporosis" → osteoporosis
    assert not any(finding_key(s.finding) == diagnosis_key(s.diagnosis) for s in kb.suggestions)
    assert all(s.finding and s.diagnosis and diagnosis_key(s.diagnosis) in kb.diagnoses for s in kb.suggestions)


def test_a_sign_and_a_finding_suggest_their_diagnoses() -> None:
    kb = read_diagnosis_kb()
    bronchogram = {s.diagnosis for s in kb.suggestions if s.finding == "Air Bronchogram"}
    assert "Pneumonia" in bronchogram
    apple_core = [s for s in kb.suggestions if finding_key(s.finding) == "apple core constricting lesion"]
    assert any(diagnosis_key(s.diagnosis) == "colorectal cancer" and "CT" in s.modalities for s in apple_core)
    assert kb.diagnoses["colorectal cancer"].synonyms == ("CRC",)


def test_absences_are_marked_and_generic_findings_weigh_little() -> None:
    kb = read_diagnosis_kb()
    assert all(s.negative for s in kb.suggestions if finding_key(s.finding) == "no enhancement")
    assert not any(s.negative for s in kb.suggestions if finding_key(s.finding) == "absent septum pellucidum")
    specificity = kb.specificity()
    assert specificity["restricted diffusion"] < 0.05 < specificity["railroad track calcifications"]


def test_modalities_and_names_are_normalised() -> None:
    assert modalities("CT/MRI") == ("CT", "MR") and modalities("Ultrasound (US)") == ("US",)
    assert modalities(["Radiography", "CT"]) == ("XR", "CT") and modalities("") == () and modalities(None) == ()
    assert split_diagnosis("Hepatocellular Carcinoma (HCC)").synonyms == ("HCC",)
    assert split_diagnosis("Bacterial Pneumonia (secondary to FBA)").name == "Bacterial Pneumonia (secondary to FBA)"


def test_a_place_and_a_generic_finding_is_not_a_diagnosis() -> None:
    kb = read_diagnosis_kb()
    assert (
        "liver lesions" not in kb.diagnoses and "pulmonary nodules" not in kb.diagnoses and "masses" not in kb.diagnoses
    )
    assert "abdominal aortic aneurysm" in kb.diagnoses and "achalasia" in kb.diagnoses
    assert kb.dropped["not a diagnosis (a finding, material or symptom)"] > 100
