"""Notes split into items, each with its certainty, sides, numbers, levels and sequences."""

from kgreport.knowledge.extraction.notes_items import certainty, levels_of, numbers_of, sequences_of, split_items


def test_items_end_at_breaks_and_keep_what_a_report_must_keep() -> None:
    items = split_items("R frontal mass 3.2 x 2.8cm, heterog enh; no MLS\nT2 hyperint edema ?")
    assert [i.typed for i in items] == ["R frontal mass 3.2 x 2.8cm, heterog enh", "no MLS", "T2 hyperint edema ?"]
    mass, shift, edema = items
    assert mass.text.startswith("right frontal mass 3.2 x 2.8 cm, heterogeneous")
    assert (mass.status, mass.sides, mass.numbers) == ("present", ("right",), ("3.2 x 2.8 cm",))
    assert (shift.text, shift.status) == ("no midline shift", "absent")
    assert (edema.status, edema.sequences, edema.levels) == ("uncertain", ("T2",), ())
    assert [i.index for i in items] == [0, 1, 2]


def test_a_negated_list_is_one_item_and_a_finding_list_is_several() -> None:
    [negated] = split_items("no effusion, consolidation or PTX")
    assert (negated.text, negated.status) == ("no effusion, consolidation or pneumothorax", "absent")
    assert [i.text for i in split_items("L4-5 disc herniation, mild canal stenosis")] == [
        "L4-5 disc herniation",
        "mild canal stenosis",
    ]


def test_the_exam_and_the_history_are_not_findings() -> None:
    exam, finding = split_items("CT neck w/ contrast: left ICA courses medially")
    assert (exam.kind, finding.kind) == ("technique", "finding")
    assert finding.text == "left internal carotid artery courses medially" and finding.sides == ("left",)
    assert split_items("hx VP shunt")[0].kind == "history"


def test_t1_t2_are_levels_on_ct_and_sequences_on_mr() -> None:
    assert levels_of("T12 compression fracture") == ("T12",)
    assert levels_of("T2 hyperintense cord") == () and sequences_of("T2 hyperintense cord") == ("T2",)
    assert levels_of("T2 and T3 bodies") == ("T2", "T3")
    assert levels_of("T2 lesion", "MR") == () and sequences_of("STIR bright T12 body", "MR") == ("STIR",)
    assert levels_of("STIR bright T12 body", "MR") == ("T12",)
    assert levels_of("C1-2 subluxation") == ("C1-2",)


def test_numbers_keep_units_and_certainty_reads_hedges() -> None:
    assert numbers_of("3.2x2.8cm mass, 4mm nodule") == ("3.2 x 2.8 cm", "4 mm")
    assert numbers_of("L4-5 disc, T2 bright") == ()
    assert certainty("no PE") == "absent" and certainty("PE not excluded") == "uncertain"
    assert certainty("no PTX?") == "uncertain" and certainty("mass") == "present"
    assert certainty("cord is not expanded") == "absent"


def test_notes_without_words_have_no_items() -> None:
    assert split_items("") == [] and split_items(" ;\n - . ") == []


def test_notes_settle_an_abbreviation_its_item_does_not() -> None:
    assert [i.text for i in split_items("NCCT head; no hydro")][1] == "no hydrocephalus"
    assert [i.text for i in split_items("renal masses; no hydro")][1] == "no hydronephrosis"


def test_what_follows_a_finding_stays_with_it() -> None:
    [artery] = split_items("R subclavian a. arises as separate last branch off distal arch")
    assert artery.text.startswith("right subclavian artery arises")
    [masses] = split_items("multiple b/l renal masses, many w/ macroscopic fat, one R exophytic")
    assert masses.sides == ("bilateral", "right")
    [lesions] = split_items("multiple liver lesions, largest 3 cm")
    assert lesions.numbers == ("3 cm",)


def test_the_exam_protocol_and_the_timing_are_not_findings() -> None:
    exam, artery = split_items("CTA chest, PE protocol. R subclavian a. arises off distal arch")
    assert exam.kind == "technique" and artery.kind == "finding"
    assert split_items("hrs after presentation")[0].kind == "history"
