"""kgreport.generator.decoding on real transformers models: plain greedy equals HF `generate`, and draft-lookup
speculation returns exactly what plain greedy returns, whatever the draft."""

from __future__ import annotations

import functools
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from kgreport.generator.decoding import DecodeResult, DecodingConfig, decode, rows_independent
from kgreport.generator.llm import load_llm
from kgreport.generator.model import quantize_linear_int8

TEXT = "the the the the"  # on the tiny model, a prompt where both processors change the output
PROCESSING = [(1.0, 0), (1.2, 3), (0.5, 2)]  # (repetition_penalty, no_repeat_ngram); 0.5 rewards loops that 2 bans
N = 48
Plain = Callable[..., DecodeResult]


def _prompt(model: Any, tokenizer: Any, text: str, soft: int = 2) -> torch.Tensor:
    """Chat-templated `text` as embeddings with `soft` non-token vectors spliced in, as the report writer builds it."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        table = model.get_input_embeddings()(torch.tensor(ids))
    generator = torch.Generator().manual_seed(len(text))
    vectors = torch.randn(soft, table.shape[1], generator=generator) * table.std()
    return torch.cat([table[:3], vectors, table[3:]])


def _config(penalty: float, ngram: int, n: int = N, lookup: int = 8) -> DecodingConfig:
    return DecodingConfig(max_new_tokens=n, repetition_penalty=penalty, no_repeat_ngram=ngram, lookup_tokens=lookup)


def _hf(
    model: Any, tokenizer: Any, prompt: torch.Tensor, n: int, penalty: float, ngram: int, forced: Sequence[int]
) -> list[int]:
    """HF greedy; forced ids go in as `input_ids` beside the embeddings, so its processors see them as output."""
    kwargs: dict[str, Any] = {}
    if forced:
        with torch.no_grad():
            prompt = torch.cat([prompt, model.get_input_embeddings()(torch.tensor(list(forced)))])
        kwargs["input_ids"] = torch.tensor([list(forced)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(
            inputs_embeds=prompt[None],
            attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            repetition_penalty=penalty,
            no_repeat_ngram_size=ngram,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            **kwargs,
        )[0].tolist()
    assert out[: len(forced)] == list(forced)
    out = out[len(forced) :]
    return out[: out.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in out else out


@pytest.fixture(scope="module")
def tiny(tiny_llm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, torch.Tensor]:
    model, tokenizer = load_llm(tiny_llm, tmp_path_factory.mktemp("decoding-cache"))
    return model, tokenizer, _prompt(model, tokenizer, TEXT)


@pytest.fixture(scope="module")
def plain(tiny: tuple[Any, Any, torch.Tensor]) -> Plain:
    """Plain greedy on the tiny model, once per (penalty, ngram, forced ids)."""
    model, tokenizer, prompt = tiny

    @functools.cache
    def run(penalty: float, ngram: int, forced: tuple[int, ...] = ()) -> DecodeResult:
        config = _config(penalty, ngram, lookup=0)
        return decode(model, prompt, eos_token_id=tokenizer.eos_token_id, config=config, forced_ids=forced)

    return run


def _forced(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


@pytest.mark.parametrize(("penalty", "ngram"), PROCESSING)
@pytest.mark.parametrize("forced_text", ["", "Findings:"])
def test_plain_decode_equals_hf_generate(tiny: Any, plain: Plain, penalty: float, ngram: int, forced_text: str) -> None:
    model, tokenizer, prompt = tiny
    forced = _forced(tokenizer, forced_text)
    result = plain(penalty, ngram, forced)
    assert result.ids == _hf(model, tokenizer, prompt, N, penalty, ngram, forced)
    assert len(result.ids) == N and not result.eos and result.forwards == N - 1
    assert result.proposed == result.accepted == 0 and result.tokens_per_forward == 1.0


def test_the_processors_change_the_output(plain: Plain) -> None:
    """Otherwise the equality tests would not check the processing at all."""
    unprocessed, penalised, banned = (plain(p, n).ids for p, n in PROCESSING)
    assert penalised != unprocessed and banned != unprocessed
    assert banned != plain(0.5, 0).ids, "the 2-gram ban bites on the loop the 0.5 penalty rewards"


def _edited(ids: Sequence[int]) -> list[int]:
    """The text with a token changed, one inserted and a stretch deleted: proposals get rejected midway."""
    edited = list(ids)
    edited[5] += 1
    edited.insert(15, 42)
    del edited[25:29]
    return edited


@pytest.mark.parametrize(("penalty", "ngram"), PROCESSING)
@pytest.mark.parametrize("forced_text", ["", "Findings:"])
@pytest.mark.parametrize("draft_kind", ["copy", "edited", "shuffled", "random", "empty"])
def test_speculative_equals_plain_greedy(
    tiny: Any, plain: Plain, penalty: float, ngram: int, forced_text: str, draft_kind: str
) -> None:
    model, tokenizer, prompt = tiny
    forced = _forced(tokenizer, forced_text)
    expected = plain(penalty, ngram, forced)
    rng = random.Random(0)
    draft = {
        "copy": [*forced, *expected.ids],
        "edited": _edited(expected.ids),
        "shuffled": rng.sample(expected.ids, len(expected.ids)),
        "random": [rng.randrange(len(tokenizer)) for _ in range(60)],
        "empty": [],
    }[draft_kind]
    config = _config(penalty, ngram)
    fast = decode(model, prompt, eos_token_id=tokenizer.eos_token_id, config=config, draft_ids=draft, forced_ids=forced)
    assert fast.ids == expected.ids
    assert 0 <= fast.accepted <= fast.proposed
    if draft_kind == "copy":
        assert fast.tokens_per_forward > 2 and fast.forwards < expected.forwards / 2
    if draft_kind in ("edited", "shuffled"):
        assert fast.proposed > fast.accepted, "some proposals were rejected: the cache was cropped"
    if draft_kind == "edited":
        assert fast.accepted > 10
    if draft_kind == "empty":
        assert fast.proposed == 0 and fast.forwards == expected.forwards


@pytest.mark.parametrize("limit", [0, 1, 2, 5, 13, 30])
def test_max_new_tokens_is_exact_even_when_the_draft_runs_past_it(tiny: Any, plain: Plain, limit: int) -> None:
    model, tokenizer, prompt = tiny
    expected = plain(1.2, 3).ids
    config = _config(1.2, 3, n=limit, lookup=32)
    fast = decode(model, prompt, eos_token_id=tokenizer.eos_token_id, config=config, draft_ids=expected)
    assert fast.ids == expected[:limit] and not fast.eos


def test_eos_stops_decoding(tiny: Any, plain: Plain) -> None:
    """The random model never says eos, so a token it does say is named eos: decoding must stop before it."""
    model, _, prompt = tiny
    ids = plain(1.2, 3).ids
    stop = ids[20]
    expected = ids[: ids.index(stop)]
    slow = decode(model, prompt, eos_token_id=stop, config=_config(1.2, 3, lookup=0))
    fast = decode(model, prompt, eos_token_id=stop, config=_config(1.2, 3), draft_ids=ids)
    assert slow.ids == fast.ids == expected and slow.eos and fast.eos
    assert slow.forwards == len(expected), "the prefill chose the first token, the last forward chose eos"
    assert fast.tokens_per_forward > 2


def test_dynamic_int8_model_decodes_without_speculation(tiny: Any) -> None:
    """Dynamic int8 quantises each forward's input with one scale, so verifying proposals in one forward
    would change the output: such a model gets plain greedy, whatever the draft."""
    model, tokenizer, prompt = tiny
    quantized = quantize_linear_int8(model)
    assert rows_independent(model) and not rows_independent(quantized)
    eos = tokenizer.eos_token_id
    expected = decode(quantized, prompt, eos_token_id=eos, config=_config(1.2, 3, lookup=0))
    fast = decode(quantized, prompt, eos_token_id=eos, config=_config(1.2, 3), draft_ids=expected.ids)
    assert fast.ids == expected.ids and fast.proposed == 0


DRAFT = (
    "Findings: There is a large right pleural effusion with adjacent compressive atelectasis. "
    "The heart size is normal. No pneumothorax.\nImpression: Large right pleural effusion."
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The packaged SmolLM2-135M-Instruct (GGUF converted once into this module's temp dir, 20-40 s)."""
    return load_llm(None, tmp_path_factory.mktemp("smollm2-cache"))


@pytest.mark.slow
@pytest.mark.parametrize(("penalty", "ngram"), [(1.0, 0), (1.2, 3)])
def test_speculative_equals_plain_on_real_smollm2(smollm2: tuple[Any, Any], penalty: float, ngram: int) -> None:
    model, tokenizer = smollm2
    prompt = _prompt(model, tokenizer, f"Correct the typos and repeat this chest CT report:\n{DRAFT}", soft=0)
    forced = _forced(tokenizer, "Findings:")
    draft = tokenizer(DRAFT, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    plain = decode(model, prompt, eos_token_id=eos, config=_config(penalty, ngram, n=40, lookup=0), forced_ids=forced)
    assert plain.ids == _hf(model, tokenizer, prompt, 40, penalty, ngram, forced)
    config = _config(penalty, ngram, n=40)
    fast = decode(model, prompt, eos_token_id=eos, config=config, draft_ids=draft, forced_ids=forced)
    assert fast.ids == plain.ids
    assert fast.tokens_per_forward > 2, "the model copies the draft: most proposals are accepted"
