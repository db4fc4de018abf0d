"""Every setting's default lives in one config record: the packages below never restate one.

The records: `retrieval.config` (search, vector index, imaging), `indexing.options` (ingest) and
`generator.config` (the report writer). `usecases.settings.Settings` reads its defaults from them. This scan looks
for a default written again as a number somewhere else: `k: int = 5`, `Field(default=20_000)`, an
`Annotated[...] = 320` CLI option, or a call passing `max_new_tokens=140`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kgreport.generator.config import TrainConfig, WriterConfig
from kgreport.indexing.options import IngestOptions
from kgreport.retrieval.config import ImagingConfig, IndexParams, SearchConfig

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "generator", "indexing", "knowledge", "retrieval", "usecases")
CONFIG_MODULES = {"retrieval/config.py", "indexing/options.py", "generator/config.py"}

# (names a default goes by in the code, its value in the records); the value is read from the record, so
# the table follows a changed default.
DEFAULTS: list[tuple[tuple[str, ...], object]] = [
    (("k",), SearchConfig.k),
    (("k",), WriterConfig.k),
    (("exact_threshold", "exact_search_threshold"), IndexParams.exact_threshold),
    (("nprobe", "ivf_nprobe"), IndexParams.nprobe),
    (("volume_slices",), ImagingConfig.volume_slices),
    (("max_pixels",), ImagingConfig.max_pixels),
    (("max_image_megapixels",), ImagingConfig.max_pixels / 1e6),
    (("cache_size", "query_cache_size", "max_entries"), SearchConfig.cache_size),
    (("batch_cases", "ingest_batch_cases"), IngestOptions.batch_cases),
    (("image_weight", "hybrid_image_weight"), SearchConfig.image_weight),
    (("prompt_budget",), WriterConfig.prompt_budget),
    (("max_new_tokens",), WriterConfig.max_new_tokens),
    (("case_words",), WriterConfig.case_words),
    (("lexical_weight",), WriterConfig.lexical_weight),
    (("lookup_tokens",), WriterConfig.lookup_tokens),
    (("drop_side",), TrainConfig.drop_side),
    (("lora_lr",), TrainConfig.lora_lr),
    (("fusion_lr",), TrainConfig.fusion_lr),
    (("eval_every",), TrainConfig.eval_every),
]
# What older code restated and must not come back (the legacy writer's numbers stay in its config module).
RETIRED = [(("k",), 3), (("prompt_budget",), 384), (("max_new_tokens",), 160), (("max_new_tokens",), 120)]


def _literals(value: object) -> list[str]:
    """How the value may be written: 20000 / 20_000, 40.0 / 40."""
    if isinstance(value, bool):
        return [str(value)]
    if isinstance(value, float) and value.is_integer():
        return [f"{int(value)}.0", f"{int(value)}\\."]
    if isinstance(value, int):
        plain = str(value)
        return [plain, f"{value:_}"] if value >= 10_000 else [plain]
    return [re.escape(str(value))]


def _patterns(names: tuple[str, ...], value: object) -> list[re.Pattern[str]]:
    name = "|".join(names)
    literal = "|".join(_literals(value))
    end = r"(?![\w.])"
    return [
        re.compile(rf"^\s*(?:{name})\s*:[^=\n]*=\s*(?:Field\(\s*default=)?(?:{literal}){end}", re.M),  # field
        re.compile(rf"^\s*(?:{name})\s*:\s*Annotated\[.*\]\s*=\s*(?:{literal}){end}", re.M),  # CLI option
        re.compile(rf"[(,]\s*(?:{name})\s*(?::[^=,)]*)?=\s*(?:{literal}){end}"),  # argument or parameter
    ]


def _sources() -> list[Path]:
    return [
        p
        for package in PACKAGES
        for p in sorted((REPO / package).rglob("*.py"))
        if p.relative_to(REPO).as_posix() not in CONFIG_MODULES
    ]


@pytest.mark.parametrize(("names", "value"), DEFAULTS + RETIRED, ids=lambda v: str(v))
def test_no_default_is_restated_below_the_config(names: tuple[str, ...], value: object) -> None:
    found = []
    for path in _sources():
        text = path.read_text()
        for pattern in _patterns(names, value):
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {match.group(0).strip()}")
    assert not found, f"default {value!r} of {names} restated outside the config records:\n" + "\n".join(found)


def test_the_scan_finds_a_restated_default(tmp_path: Path) -> None:
    """The patterns catch each way a default is written (or the scan above could pass by seeing nothing)."""
    written = [
        "    k: int = 5\n",
        "    k: int = Field(default=5, ge=1)\n",
        '    k: Annotated[int, typer.Option("-k", min=1)] = 5,\n',
        "    searcher.search(query, k=5)\n",
        "def f(x, *, exact_threshold: int = 20_000) -> None:\n",
    ]
    pairs = [(("k",), 5)] * 4 + [(("exact_threshold",), 20_000)]
    for text, (names, value) in zip(written, pairs, strict=True):
        assert any(p.search(text) for p in _patterns(names, value)), text
    assert not any(p.search("    k: int = 50\n") for p in _patterns(("k",), 5))
    assert not any(p.search("    kk: int = 5\n") for p in _patterns(("k",), 5))
