"""The text of a DICOM Structured Report: the report of a PACS study, when the study holds one.

Basic, Enhanced and Comprehensive SR documents hold their text as a tree of content items
(ContentSequence): CONTAINER items group, TEXT items carry the words, and each item's concept name
(`ConceptNameCodeSequence`) says what it is ("Findings", "Impression"). The text comes out as
`Heading: text` lines in document order, which `retrieval.report_sections.split_report` reads like
any other report. A document that is not an SR, or holds no text, is a `MalformedReportError` naming
what is wrong; the study is then indexed image-only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset

from kgreport.errors import InvalidInput

# Basic Text, Enhanced, Comprehensive and Comprehensive 3D SR storage.
TEXT_SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.34",
}
MAX_DEPTH = 32  # content trees nest a few levels; deeper is malformed (or hostile)


class MalformedReportError(InvalidInput):
    """An SR document whose text cannot be read."""

    code = "malformed_report"


def is_text_sr(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in TEXT_SR_CLASSES or str(ds.get("Modality", "")) == "SR"


def _concept_name(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeMeaning", "")).strip() if names else ""


def _text_items(items: object, heading: str, depth: int) -> Iterator[tuple[str, str]]:
    if depth > MAX_DEPTH:
        raise MalformedReportError(f"content tree nested deeper than {MAX_DEPTH} levels")
    if not isinstance(items, Iterable) or isinstance(items, str | bytes):
        raise MalformedReportError("ContentSequence (0040,A730) is not a sequence")
    for item in items:
        if not isinstance(item, Dataset):
            raise MalformedReportError("a content item is not a dataset")
        kind = str(item.get("ValueType", "")).upper()
        name = _concept_name(item)
        if kind == "TEXT":
            text = str(item.get("TextValue", "")).strip()
            if text:
                yield name or heading, text
        elif kind == "CONTAINER":
            yield from _text_items(item.get("ContentSequence") or [], name or heading, depth + 1)


def report_text(ds: Dataset) -> str:
    """The SR document's text as `Heading: text` lines, in document order."""
    if not is_text_sr(ds):
        raise MalformedReportError(f"not a text Structured Report (SOP class {ds.get('SOPClassUID', 'missing')})")
    if "ContentSequence" not in ds:
        raise MalformedReportError("no ContentSequence (0040,A730)")
    try:
        parts = list(_text_items(ds.ContentSequence, "", 0))
    except MalformedReportError:
        raise
    except (AttributeError, TypeError, ValueError) as err:
        raise MalformedReportError(f"unreadable content tree ({type(err).__name__}: {err})") from err
    if not parts:
        raise MalformedReportError("the document holds no text")
    lines: list[str] = []
    for heading, text in parts:
        lines.append(f"{heading}: {text}" if heading else text)
    return "\n".join(lines)
