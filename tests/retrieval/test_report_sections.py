from kgreport.retrieval.report_sections import split_report


def test_headings_split_into_sections() -> None:
    text = (
        "HISTORY: 58 yo man, cough.\nFINDINGS: Mass in the left upper lobe.\nNo effusion.\n"
        "IMPRESSION: Likely hamartoma."
    )
    report = split_report(text)
    assert report.history == "58 yo man, cough."
    assert report.findings == "Mass in the left upper lobe.\nNo effusion."
    assert report.impression == "Likely hamartoma."
    assert report.diagnosis == ""


def test_synonyms_and_case_are_accepted() -> None:
    report = split_report("Indication - headache\nConclusion: normal brain\nfinal diagnosis: none")
    assert report.history == "headache"
    assert report.impression == "normal brain"
    assert report.diagnosis == "none"


def test_one_line_reports_split_at_headings_after_a_sentence() -> None:
    report = split_report("Findings: Right lower lobe consolidation. Impression: Pneumonia. Diagnosis: CAP")
    assert report.findings == "Right lower lobe consolidation."
    assert report.impression == "Pneumonia."
    assert report.diagnosis == "CAP"
    kept = split_report("Findings: Stable nodule. Summary of prior exams is in the chart.")
    assert kept.findings == "Stable nodule. Summary of prior exams is in the chart." and not kept.impression


def test_text_without_headings_is_findings() -> None:
    report = split_report("  A 2 cm nodule. History of smoking is noted in the chart.  ")
    assert report.findings == "A 2 cm nodule. History of smoking is noted in the chart."
    assert report.history == ""


def test_empty_report() -> None:
    assert split_report("").is_empty()
    assert split_report("FINDINGS:   \n").is_empty()
