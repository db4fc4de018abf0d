"""MedPix 2.0 archives: `data_{split}.jsonl` (clinical cases), `descriptions_{split}.jsonl` (images), `images/`.

One `Case` per clinical case (`U_id`), one `CaseImage` per listed CT (`TAC`) or MR (`MRI`) image, with
the image's own caption, modality (`Type`: CT | MR), plane and body region (its "Location Category").
MedPix has no patient ids: every case is its own patient.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexing.archives.base import ArchiveError
from retrieval.records import Case, CaseImage, ReportSections, SkippedItem

SPLITS = ("train", "dev", "test")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
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
        self._cases = _read_jsonl(cases_file)[:limit]
        descriptions_file = self.root / f"descriptions_{split}.jsonl"
        descriptions = _read_jsonl(descriptions_file) if descriptions_file.is_file() else []
        self._descriptions = {d["image"]: d for d in descriptions if "image" in d}

    def __len__(self) -> int:
        return len(self._cases)

    def __iter__(self) -> Iterator[Case | SkippedItem]:
        for row in self._cases:
            yield self._case(row)

    def _image(self, name: str) -> CaseImage | None:
        path = self.root / "images" / f"{name}.jpg"
        if not path.is_file():
            return None
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

    def _case(self, row: dict[str, Any]) -> Case | SkippedItem:
        case_id = str(row.get("U_id") or "")
        if not case_id:
            return SkippedItem(source=self.name, reason="case without U_id")
        names = list(row.get("TAC") or []) + list(row.get("MRI") or [])
        images = [img for img in (self._image(n) for n in names) if img is not None]
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
