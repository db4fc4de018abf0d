from retrieval.report_sections import split_report


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


def test_text_without_headings_is_findings() -> None:
    report = split_report("  A 2 cm nodule. History of smoking is noted in the chart.  ")
    assert report.findings == "A 2 cm nodule. History of smoking is noted in the chart."
    assert report.history == ""


def test_empty_report() -> None:
    assert split_report("").is_empty()
    assert split_report("FINDINGS:   \n").is_empty()
