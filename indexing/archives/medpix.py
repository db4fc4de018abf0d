"""MedPix 2.0 archives: `data_{split}.jsonl` (clinical cases), `descriptions_{split}.jsonl` (images), `images/`.

One `Case` per clinical case (`U_id`), one `CaseImage` per listed CT (`TAC`) or MR (`MRI`) image, with
the image's own caption, modality (`Type`: CT | MR), plane and body region (its "Location Category").
MedPix has no patient ids: every case is its own patient.

Image names come from the data file, so each image path is resolved (symlinks followed) and must
stay inside the archive root: a name like `../../../x` is dropped with a warning, and a case left
with no image is skipped naming the names. A `U_id` that breaks the id rule (`retrieval.ids`)
skips its row, naming the file and line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kgreport.indexing.archives.base import ArchiveError, inside_root, outside_reason, skip, warn_dropped
from kgreport.json_types import UncheckedJson
from kgreport.retrieval.ids import InvalidIdError, check_id
from kgreport.retrieval.records import Case, CaseImage, ReportSections, SkippedItem

SPLITS = ("train", "dev", "test")


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; ArchiveError naming the line that is not JSON."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ArchiveError(f"{path}:{line_no}: not JSON ({err.msg})") from err
    return rows


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _majority(values: list[str | None]) -> str | None:
    present = [v for v in values if v]
    return Counter(present).most_common(1)[0][0] if present else None


class MedPixArchive:
    """Reader for the MedPix 2.0 layout; `split` picks `data_{split}.jsonl`."""

    def __init__(self, root: str | Path, split: str = "train", *, limit: int | None = None) -> None:
        self.root = Path(root)
        if split not in SPLITS:
            raise ArchiveError(f"unknown MedPix split {split!r}; expected one of {', '.join(SPLITS)}")
        self.split = split
        self.name = f"medpix:{self.root.name}:{split}"
        cases_file = self.root / f"data_{split}.jsonl"
        if not cases_file.is_file():
            raise ArchiveError(f"{cases_file}: not found (is {self.root} a MedPix 2.0 folder?)")
        self._cases = [(f"{cases_file.name}:{n}", row) for n, row in _read_jsonl(cases_file)[:limit]]
        descriptions_file = self.root / f"descriptions_{split}.jsonl"
        descriptions = [d for _, d in _read_jsonl(descriptions_file)] if descriptions_file.is_file() else []
        self._descriptions = {d["image"]: d for d in descriptions if isinstance(d, dict) and "image" in d}

    def __len__(self) -> int:
        return len(self._cases)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        for where, row in self._cases:
            if not isinstance(row, dict):
                yield SkippedItem(source=where, reason="line is not a JSON object")
                continue
            yield self._case(where, row)

    def _images(self, case_id: str, names: list[str]) -> tuple[list[CaseImage], list[str]]:
        """(the case's images found inside the root, the names that resolve outside it, each warned about)."""
        images, outside = [], []
        for name in names:
            path = self.root / "images" / f"{name}.jpg"
            if not path.is_file():
                continue
            if inside_root(path, self.root) is None:
                outside.append(name)
                warn_dropped(case_id, outside_reason("image", f"images/{name}.jpg"))
                continue
            images.append(self._image(name, path))
        return images, outside

    def _image(self, name: str, path: Path) -> CaseImage:
        desc = self._descriptions.get(name, {})
        info = desc.get("Description") or {}
        return CaseImage(
            image_id=name,
            path=path,
            caption=_text(info.get("Caption")),
            modality=desc.get("Type"),
            body_region=desc.get("Location Category"),
            plane=info.get("Plane"),
            metadata={
                k: v
                for k, v in {
                    "location": desc.get("Location"),
                    "modality_detail": info.get("Modality"),
                    "age": info.get("Age"),
                    "sex": info.get("Sex"),
                }.items()
                if v
            },
        )

    def _case(self, where: str, row: UncheckedJson) -> Case | SkippedItem:
        case_id = str(row.get("U_id") or "")
        if not case_id:
            return SkippedItem(source=where, reason="case without U_id")
        try:
            check_id(case_id, "case id", f"U_id of {where}")
        except InvalidIdError as err:
            return skip(where, str(err))
        names = [str(n) for n in list(row.get("TAC") or []) + list(row.get("MRI") or [])]
        images, outside = self._images(case_id, names)
        if not images and outside:
            listed = ", ".join(repr(n) for n in outside)
            return skip(case_id, f"images {listed} resolve outside the archive root; no image left")
        if not images:
            return SkippedItem(source=case_id, reason=f"none of its {len(names)} images found under images/")
        info = row.get("Case") or {}
        report = ReportSections(
            history=_text(info.get("History")),
            findings=_text(info.get("Findings")),
            diagnosis=_text(info.get("Case Diagnosis")),
        )
        if not report.findings and not any(img.caption for img in images):
            return SkippedItem(source=case_id, reason="empty report (no findings, no captions)")
        topic = row.get("Topic") or {}
        return Case(
            case_id=case_id,
            images=tuple(images),
            report=report,
            patient_id=None,
            modality=_majority([img.modality for img in images]),
            body_region=_majority([img.body_region for img in images]),
            metadata={
                k: v
                for k, v in {
                    "title": _text(info.get("Title")),
                    "differential_diagnosis": _text(info.get("Differential Diagnosis")),
                    "acr_code": topic.get("ACR Code"),
                    "category": topic.get("Category"),
                    "split": self.split,
                }.items()
                if v
            },
        )
