"""Importing the packages changes nothing around them: no environment variable is written at import time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "generator", "indexing", "knowledge", "retrieval")
MODULES = [
    "kgreport.usecases.services",
    "kgreport.api.service.app",
    "kgreport.api.cli",
    "kgreport.retrieval.encoders.text_encoder",
    "kgreport.generator.llm",
]


def test_no_environment_writes_at_import() -> None:
    code = (
        "import json, os, importlib; before = dict(os.environ); "
        f"[importlib.import_module(m) for m in {MODULES!r}]; "
        "print(json.dumps(sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}  # neither offline variable set beforehand
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    changed = json.loads(done.stdout.strip().splitlines()[-1])
    # Libraries set their own (sklearn KMP_DUPLICATE_LIB_OK, tokenizers, torch): ours are the ones our code names.
    sources = "\n".join(p.read_text() for d in PACKAGES for p in (REPO / d).rglob("*.py"))
    ours = [k for k in changed if k.startswith("KGREPORT_") or f'"{k}"' in sources]
    assert ours == [], f"importing {MODULES} set {ours}"
