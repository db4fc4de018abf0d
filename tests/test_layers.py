"""The layers' arrows point down: each package imports only the layers below it (DESIGN.md), so a use case
can change under its front ends, and a store under its use cases, without a cycle to untangle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GROUND = {"errors", "json_types"}  # `kgreport/` itself: the error base, the JSON type
BELOW: dict[str, set[str]] = {
    "knowledge": GROUND,
    "retrieval": GROUND,
    "indexing": GROUND | {"knowledge", "retrieval"},
    "generator": GROUND | {"knowledge", "retrieval"},
    "usecases": GROUND | {"knowledge", "retrieval", "indexing", "generator"},
    "api": GROUND | {"knowledge", "retrieval", "indexing", "generator", "usecases"},
}


def imported_layers(source: str) -> set[str]:
    """The `kgreport.<layer>` names a module imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "kgreport":  # `from kgreport import errors`
                names = [f"kgreport.{a.name}" for a in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("kgreport.")}
    return found


def test_the_scan_sees_every_form_of_import() -> None:
    code = "\n".join(
        [
            "import kgreport.api.cli",
            "from kgreport.usecases import ingest",
            "from kgreport import errors",
            "def f():",
            "    from kgreport.generator.model import X",
        ]
    )
    assert imported_layers(code) == {"api", "usecases", "errors", "generator"}


@pytest.mark.parametrize("layer", sorted(BELOW))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    upward = {
        f"{path.relative_to(REPO)} imports kgreport.{name}"
        for path in sorted((REPO / layer).rglob("*.py"))
        for name in imported_layers(path.read_text()) - BELOW[layer] - {layer}
    }
    assert not upward, sorted(upward)
