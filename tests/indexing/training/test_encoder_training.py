"""Encoder training on real demo images with the tiny config: richer label heads, report-text targets,
region-grouped batches, and what the saved encoder keeps."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.training.encoder_training import (
    RICH_HEADS,
    TrainingConfig,
    _batches,
    label_vocab,
    train_encoder,
)
from kgreport.indexing.training.pairs import TrainingPair, acr_pathology, load_pairs, pair_text
from kgreport.retrieval.device import resolve_device
from kgreport.retrieval.encoders.image_encoder import CTEncoder
from kgreport.retrieval.records import Case

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"


@pytest.fixture(scope="module")
def demo_pairs() -> list[TrainingPair]:
    pairs, skipped = load_pairs(MedPixArchive(DEMO, "train", limit=24), short_side=48, text_target="report")
    assert not skipped
    return pairs


def test_acr_pathology_is_the_first_digit_of_the_pathology_field() -> None:
    assert acr_pathology("1.35") == "3"
    assert acr_pathology("562.1521") == "1"
    assert acr_pathology(4.4) == "4"
    assert acr_pathology("8.-1") is None and acr_pathology("-1.-1") is None and acr_pathology(None) is None


def test_report_target_leads_with_the_diagnosis() -> None:
    case = next(c for c in MedPixArchive(DEMO, "train", limit=3) if isinstance(c, Case))
    image = case.images[0]
    text = pair_text(image, case, "report")
    assert case.report.diagnosis.strip().rstrip(".")[:30] in text
    assert text.index(case.report.diagnosis.strip()[:20]) < len(text) // 2
    assert pair_text(image, case) != text
    with pytest.raises(ValueError, match="text target"):
        pair_text(image, case, "impression")


def test_pairs_carry_every_label_a_head_can_learn(demo_pairs: list[TrainingPair]) -> None:
    assert set(demo_pairs[0].labels) == set(RICH_HEADS)
    assert all(p.labels["body_region"] and p.labels["location"] and p.labels["category"] for p in demo_pairs)
    vocab = label_vocab(demo_pairs, RICH_HEADS)
    assert {"modality", "body_region", "location"} <= set(vocab)
    # Beyond the core heads a label needs three images, and a head two labels.
    for head in set(vocab) - {"modality", "body_region"}:
        assert len(vocab[head]) >= 2
        assert all(sum(p.labels[head] == label for p in demo_pairs) >= 3 for label in vocab[head])


def test_grouped_batches_hold_one_region_each_and_cover_the_data() -> None:
    groups = ["Head"] * 40 + ["Thorax"] * 30 + [None] * 9
    batches = _batches(len(groups), 16, random.Random(0), groups)
    assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
    covered = sorted(i for batch in batches for i in batch)
    assert len(covered) == len(set(covered)) and len(covered) >= 70  # only short tails are dropped
    assert _batches(10, 4, random.Random(0), None) == _batches(10, 4, random.Random(0))


def test_training_with_rich_heads_saves_an_encoder_that_classifies_them(
    demo_pairs: list[TrainingPair], tmp_path: Path
) -> None:
    config = TrainingConfig(
        model="ct-tiny",
        init="scratch",
        epochs=1,
        batch_size=8,
        max_steps=3,
        heads=RICH_HEADS,
        label_smoothing=0.1,
        text_target="report",
        group_by_region=True,
        device="cpu",
    )
    train = [p for i, p in enumerate(demo_pairs) if i % 5]
    result = train_encoder(train, demo_pairs[::5], config)
    heads = result.encoder.model.config.heads
    assert {"modality", "body_region", "location"} <= set(heads)
    assert result.device == "CPU" and result.history[0].dev["location_acc"] >= 0.0
    folder = result.encoder.save(tmp_path / "enc", training=result.summary())
    loaded = CTEncoder.load(folder)
    vectors = loaded.embed_pixels([p.pixels for p in demo_pairs[:2]])
    probabilities = loaded.classify(vectors)
    assert set(probabilities) == set(heads)
    assert sum(probabilities["location"][0].values()) == pytest.approx(1.0, abs=1e-5)
    assert loaded.fingerprint == CTEncoder.load(folder).fingerprint  # the same weights, the same print


def test_devices_are_checked() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
