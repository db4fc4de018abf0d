"""Server paths out of what clients read: error messages, job records, search results, index lists.

A client has no use for where the server keeps its files, and an attacker has much. So text leaving
the service names files relative to what the client knows: the data dir becomes `$KGREPORT_DATA_DIR`,
an index's files are named within that index, an upload by its file name, and a file of a server
archive relative to the archive root's folder (`data/demo/images/x.jpg`). The full text goes to the
server log, where an operator needs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from kgreport.usecases.settings import Settings

_REST = r"[^\s'\"()\[\],;]*"  # the rest of a path token: up to a space, a quote, a bracket or a separator


@lru_cache(maxsize=8)
def _rules(data_dir: Path, archive_roots: tuple[Path, ...]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(pattern, replacement) pairs, the most specific first; each root as given and as resolved."""
    rules: list[tuple[re.Pattern[str], str]] = []

    def spellings(path: Path) -> list[str]:
        forms = {str(path), str(path.resolve())}
        return sorted((re.escape(f) for f in forms if f not in ("/", "")), key=len, reverse=True)

    for root in spellings(data_dir):
        rules.append((re.compile(rf"{root}/uploads/{_REST}/(?=[^/\s'\"]+)"), ""))  # an upload: its file name
        rules.append((re.compile(rf"{root}/indexes/"), ""))  # an index's file: within the index
        rules.append((re.compile(root), "$KGREPORT_DATA_DIR"))
    for archive_root in sorted(archive_roots, key=lambda p: len(str(p)), reverse=True):
        for root in spellings(archive_root):
            rules.append((re.compile(root), archive_root.name or "archive"))
    return tuple(rules)


def client_text(text: str, settings: Settings) -> str:
    """`text` with every server path it names made relative (see the module docstring)."""
    for pattern, replacement in _rules(settings.data_dir, tuple(settings.allowed_archive_roots)):
        text = pattern.sub(replacement, text)
    return text


def client_json(value: Any, settings: Settings) -> Any:
    """`client_text` applied to every string inside a JSON-like value."""
    walk: Callable[[Any], Any] = lambda v: client_json(v, settings)  # noqa: E731
    if isinstance(value, str):
        return client_text(value, settings)
    if isinstance(value, dict):
        return {k: walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [walk(v) for v in value]
    return value
