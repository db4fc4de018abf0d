"""kgreport installs one import name: `kgreport.retrieval`, `kgreport.api`, ... work from any directory, and
the layers' bare folder names (`retrieval`, `api`, generic words other distributions use) are not import names."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("api", "generator", "indexing", "knowledge", "retrieval", "usecases")


def test_the_packages_import_from_any_directory(tmp_path: Path) -> None:
    code = "import kgreport.retrieval.search, kgreport.api.cli; print(kgreport.retrieval.search.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert Path(done.stdout.strip()).resolve() == REPO / "retrieval" / "search.py", "the checkout's own code"


def test_only_kgreport_is_an_installed_import_name() -> None:
    names = sorted(top for top, dists in packages_distributions().items() if "kgreport" in dists)
    assert names == ["kgreport"], names


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_by_its_bare_name_is_refused(layer: str) -> None:
    """From the checkout's root the folder is on the path; importing it there would load a second copy."""
    done = subprocess.run([sys.executable, "-c", f"import {layer}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and f"import kgreport.{layer}, not {layer}" in done.stderr
