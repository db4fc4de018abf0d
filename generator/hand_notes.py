"""Notes written by hand for archive cases, with the report a radiologist would sign from them: refiner targets.

A notes file is JSON Lines, one case per line (`data/notes/README.md` says how ours were written):
`{"case_id", "image", "notes", "target_findings", "target_impression", ...}`. A refiner trained on these
learns to write the notes out (every item, nothing added), where simulated notes paired with the archive's
full report taught it to write more than the notes say. Rows without a target (evaluation notes) are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kgreport.errors import InvalidInput


class HandNotesError(InvalidInput):
    """A notes file that cannot be read: bad JSON or a row without its fields."""

    code = "notes_file_unreadable"


@dataclass(frozen=True)
class HandNotes:
    case_id: str
    image: str  # the image id (file stem) the notes were written for
    notes: str
    target: str  # "Findings: ...\nImpression: ..."


def read_hand_notes(path: Path) -> dict[str, HandNotes]:
    """The rows of `path` that have a target, by case id."""
    out: dict[str, HandNotes] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "target_findings" not in row:
                continue
            out[str(row["case_id"])] = HandNotes(
                case_id=str(row["case_id"]),
                image=str(row["image"]),
                notes=str(row["notes"]),
                target=f"Findings: {row['target_findings'].strip()}\nImpression: {row['target_impression'].strip()}",
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise HandNotesError(f"{path}: line {number}: not a notes row ({exc})") from exc
    return out
