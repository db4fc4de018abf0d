"""Examples files: what `kgreport train-generator --save-examples` writes and `python -m generator.fit` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kgreport.generator.fit import EXAMPLES_FORMAT, Example, ExamplesFileError, load_examples, save_examples


def _example(i: int, kind: str = "edit") -> Example:
    rng = np.random.default_rng(i)
    return Example(
        case_id=f"MPX{i}",
        image_id=f"img{i}",
        image=rng.standard_normal(8).astype(np.float32),
        texts=rng.standard_normal((3, 4)).astype(np.float32),
        mask=np.array([True, True, i % 2 == 0]),
        prompt=f"Evidence {i} — «ünïcode»",
        target="Findings: x\nImpression: y",
        cited=("MPX7", "MPX8"),
        kind=kind,
        draft="RUL nodule" if kind == "notes" else "",
        features={"agreement": 0.5} if kind == "edit" else None,
        usable=True if kind == "edit" else None,
    )


def _same(a: Example, b: Example) -> bool:
    arrays = all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("image", "texts", "mask"))
    return arrays and all(getattr(a, k) == getattr(b, k) for k in ("case_id", "prompt", "cited", "features", "usable"))


def test_examples_round_trip_exactly(tmp_path: Path) -> None:
    splits = {"train": [_example(i, k) for i, k in enumerate(["edit", "notes", "repair"])], "dev": [_example(9)]}
    path = save_examples(tmp_path / "sub" / "examples.npz", splits, {"index": "medpix-train", "dims": [8, 4]})
    loaded, meta = load_examples(path)
    assert meta == {"index": "medpix-train", "dims": [8, 4]} and set(loaded) == {"train", "dev"}
    assert all(_same(a, b) for name in splits for a, b in zip(splits[name], loaded[name], strict=True))
    assert loaded["train"][0].image.dtype == np.float32 and loaded["train"][0].mask.dtype == bool
    assert [p.name for p in path.parent.iterdir()] == ["examples.npz"], "no staging file is left behind"


def test_an_empty_split_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'dev' has no examples"):
        save_examples(tmp_path / "e.npz", {"train": [_example(0)], "dev": []}, {})
    assert not list(tmp_path.iterdir())


def test_broken_and_foreign_files_get_a_clear_error(tmp_path: Path) -> None:
    good = save_examples(tmp_path / "good.npz", {"train": [_example(0), _example(1)]}, {})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    for path in (truncated, text, tmp_path / "missing.npz"):
        with pytest.raises(ExamplesFileError, match=path.name):
            load_examples(path)

    header = {"format": "something-else/1", "meta": {}, "splits": {}}
    np.savez(tmp_path / "foreign.npz", header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    with pytest.raises(ExamplesFileError, match="something-else/1"):
        load_examples(tmp_path / "foreign.npz")

    # Two texts but one vector: a file written by hand or half-copied must not pair the wrong rows.
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays.pop("header").tobytes())
    assert header["format"] == EXAMPLES_FORMAT
    arrays["train.image"] = arrays["train.image"][:1]
    np.savez(tmp_path / "short.npz", header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    with pytest.raises(ExamplesFileError, match="2 texts but 1 vectors"):
        load_examples(tmp_path / "short.npz")
