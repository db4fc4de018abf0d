"""The typed requests refuse options that do not go together before any model loads, with the same
error for every front end (the CLI turns it into a usage error, a REST route into a 422)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgreport.errors import InvalidInput
from kgreport.retrieval.search import Query
from kgreport.usecases.search import SearchRequest
from kgreport.usecases.training import TrainRequestError, TrainWriterRequest


def _train(**options: object) -> TrainWriterRequest:
    return TrainWriterRequest(index="demo", archive=Path("a"), out_dir=Path("o"), **options)  # type: ignore[arg-type]


def test_a_plain_training_request_is_accepted() -> None:
    request = _train(kinds=("edit", "repair"))
    assert request.training.epochs >= 1 and request.writer.k >= 1


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"kinds": ("edit", "poetry")}, "must be among"),
        ({"kinds": ()}, "must be among"),
        ({"kinds": ("edit", "hand_notes")}, "go together"),
        ({"hand_notes_file": Path("notes.jsonl")}, "go together"),
        ({"examples_only": True}, "save the examples"),
    ],
)
def test_options_that_do_not_go_together_are_refused(options: dict[str, object], says: str) -> None:
    with pytest.raises(TrainRequestError, match=says) as caught:
        _train(**options)
    assert isinstance(caught.value, InvalidInput) and caught.value.code == "invalid_training_request"


def test_a_search_request_is_one_query() -> None:
    request = SearchRequest("demo", image=Path("x.png"), text="lung mass", filters={"modality": "CT"})
    assert request.query() == Query(image=Path("x.png"), text="lung mass")
    assert request.k is None and request.leakage_guard is None  # the settings' and the searcher's rules
