"""Split free-text radiology reports into sections (history / findings / impression / diagnosis).

Reports in hospital archives come as one block of text with headings such as "FINDINGS:" or
"Impression -". Headings are matched case-insensitively, with their usual synonyms, at a line start,
or after a sentence's end when followed by a colon (one-line exports). Text before the first heading,
or a report with no headings at all, is findings.
"""

from __future__ import annotations

import re

from kgreport.retrieval.records import ReportSections

SECTION_HEADINGS: dict[str, tuple[str, ...]] = {
    "history": (
        "history",
        "clinical history",
        "indication",
        "indications",
        "clinical information",
        "reason for exam",
        "clinical indication",
    ),
    "findings": ("findings", "finding", "report", "description"),
    "impression": ("impression", "conclusion", "conclusions", "summary", "opinion"),
    "diagnosis": ("diagnosis", "final diagnosis", "case diagnosis"),
}
_SYNONYM_TO_SECTION = {syn: section for section, syns in SECTION_HEADINGS.items() for syn in syns}
_NAMES = "|".join(sorted((re.escape(s) for s in _SYNONYM_TO_SECTION), key=len, reverse=True))
# At a line start with ":", "-" or "—"; or, in a one-line report, after a sentence's end with ":" only
# ("... consolidation. Impression: pneumonia."), so "History of smoking" mid-text stays findings.
_HEADING_RE = re.compile(
    rf"(?:^[ \t]*(?P<name>{_NAMES})[ \t]*(?::|-|\u2014)|(?<=[.!?])[ \t]+(?P<inline>{_NAMES})[ \t]*:)[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)


def split_report(text: str) -> ReportSections:
    """Split `text` into sections; repeated headings are joined in order."""
    text = (text or "").replace("\r\n", "\n").strip()
    parts: dict[str, list[str]] = {name: [] for name in SECTION_HEADINGS}
    matches = list(_HEADING_RE.finditer(text))
    lead = text[: matches[0].start()] if matches else text
    if lead.strip():
        parts["findings"].append(lead.strip())
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        if body:
            heading = match.group("name") or match.group("inline")
            parts[_SYNONYM_TO_SECTION[heading.lower()]].append(body)
    return ReportSections(**{name: "\n".join(chunks) for name, chunks in parts.items()})
