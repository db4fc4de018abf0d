"""Greedy decoding with a KV cache, sped up by draft-lookup speculation, for one prompt of embeddings.

The refiner mostly copies or edits a draft (a retrieved report, a radiologist's notes). Prompt-lookup
("draft-lookup") speculative decoding exploits that without a second model: find the last n-gram of the
generated ids in the draft's token ids, propose the tokens that follow it there, and check all of them
with one forward pass over [last token, p1..pm]. On CPU a forward is bound by reading the weights, so a
(1+m)-token forward costs about as much as a 1-token one, and every accepted proposal is a saved forward.

Verification reproduces plain greedy exactly: at each position the logits get the same processing greedy
would apply there (repetition penalty and no-repeat-ngram over the ids generated up to that position,
earlier accepted proposals included), the argmax is taken, and proposals are accepted while they equal it.
The first disagreeing argmax (or the token after the last accepted proposal) is kept as a bonus token,
then the cache is cropped back to the accepted tokens. `lookup_tokens=0` or an empty draft is plain greedy,
one token per forward, and matches HF `generate(do_sample=False, repetition_penalty=..., no_repeat_ngram_size=...)`.

Numerics, honestly: a (1+m)-token forward and m single-token forwards use different matrix shapes, so the
logits can differ in the last float bits; where the top two logits are that close to a tie, speculative and
plain greedy (and HF `generate`, which also passes an attention mask) may pick different tokens. The
results are identical by construction up to that, and identical in practice for a model with clear margins.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from kgreport.generator.config import WriterConfig


@dataclass(frozen=True)
class DecodingConfig:
    max_new_tokens: int = WriterConfig.max_new_tokens
    # HF (CTRL) semantics over the generated ids only: logit>0 → /p, <0 → *p
    repetition_penalty: float = WriterConfig.repetition_penalty
    # HF semantics: ban a token that would repeat an n-gram of the generated ids; 0 = off
    no_repeat_ngram: int = WriterConfig.no_repeat_ngram
    lookup_ngram: int = 3  # longest suffix of the generated ids looked up in the draft (then n-1, ..., 1)
    lookup_tokens: int = WriterConfig.lookup_tokens  # most draft tokens proposed per forward; 0 = plain greedy


@dataclass
class DecodeResult:
    ids: list[int]  # generated ids, without the forced ids and without the eos
    eos: bool  # decoding stopped because the model chose eos (not at max_new_tokens)
    forwards: int  # model forward passes after the prefill
    proposed: int  # draft tokens proposed
    accepted: int  # draft tokens accepted
    prefill_seconds: float
    decode_seconds: float

    @property
    def tokens_per_forward(self) -> float:
        """Tokens chosen by the decoding forwards (ids + the eos, less the first token, which the prefill
        chose) per decoding forward: exactly 1.0 for plain greedy, higher when proposals are accepted; 0.0
        when the prefill's token ended decoding."""
        chosen = len(self.ids) + int(self.eos) - 1
        return chosen / self.forwards if self.forwards else 0.0


def process_logits(logits: torch.Tensor, generated: Sequence[int], config: DecodingConfig) -> torch.Tensor:
    """Float32 scores for the next token after `generated`, as HF's repetition-penalty and no-repeat-ngram
    processors would leave them (either order gives the same result: -inf stays -inf)."""
    scores = logits.float().clone()
    if config.repetition_penalty != 1.0 and generated:
        seen = torch.tensor(sorted(set(generated)), dtype=torch.long, device=scores.device)
        picked = scores[seen]
        p = config.repetition_penalty
        scores[seen] = torch.where(picked < 0, picked * p, picked / p)
    n = config.no_repeat_ngram
    if n > 0 and len(generated) >= n:
        # Every earlier n-gram whose first n-1 ids equal the current suffix bans its last id.
        prefix = tuple(generated[len(generated) - n + 1 :])
        banned = {
            generated[i + n - 1] for i in range(len(generated) - n + 1) if tuple(generated[i : i + n - 1]) == prefix
        }
        scores[torch.tensor(sorted(banned), dtype=torch.long, device=scores.device)] = -float("inf")
    return scores


def lookup(
    generated: Sequence[int], draft: Sequence[int], ngram: int, limit: int, cursor: int
) -> tuple[list[int], int]:
    """Up to `limit` draft ids that follow the longest suffix (≤ `ngram` ids) of `generated` found in the
    draft, and where they start. Among several matches the first starting at or after `cursor` (where the
    last proposal started) wins: a copy goes on from where it was, not from the draft's first " the"."""
    if limit <= 0:
        return [], cursor
    for n in range(min(ngram, len(generated)), 0, -1):
        suffix = list(generated[-n:])
        starts = [i + n for i in range(len(draft) - n) if list(draft[i : i + n]) == suffix]
        if starts:
            start = next((s for s in starts if s >= cursor), starts[0])
            return list(draft[start : start + limit]), start
    return [], cursor


def rows_independent(model: Any) -> bool:
    """Whether a token's logits do not depend on the other tokens fed in the same forward, which exact
    verification needs. Not so for torch's dynamic int8 Linear (`quantize_linear_int8`): it quantises its
    input with one scale per tensor, so the rows of a (1+m)-token forward shift each other's logits by far
    more than float rounding (0.1 on a 64-wide layer), and speculation would change the output."""
    return not any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in model.modules())


@torch.inference_mode()
def decode(
    model: Any,
    prompt_embeds: torch.Tensor,
    *,
    eos_token_id: int,
    config: DecodingConfig,
    draft_ids: Sequence[int] = (),
    forced_ids: Sequence[int] = (),
) -> DecodeResult:
    """Greedy continuation of `prompt_embeds` (T, H: the whole prompt as input embeddings, soft tokens
    included, in the model's dtype and device), speculating from `draft_ids` when given.

    `forced_ids` start the answer (e.g. "Findings:"): they are fed after the prompt and count as already
    generated output, so the repetition penalty, the n-gram ban and the draft lookup all see them (as HF
    does for `input_ids` passed to `generate` together with `inputs_embeds`), but they are not returned.

    A model with dynamically quantised layers (see `rows_independent`) decodes without speculation (then
    `proposed` is 0): plain greedy's output, without the speed-up.
    """
    draft = list(draft_ids) if rows_independent(model) else []
    generated = list(forced_ids)  # what the logits processing and the lookup see
    new: list[int] = []
    forwards = proposed = accepted = 0
    if config.max_new_tokens <= 0:
        return DecodeResult(new, False, 0, 0, 0, 0.0, 0.0)
    if prompt_embeds.shape[0] + len(generated) == 0:
        raise ValueError("nothing to decode from: empty prompt and no forced ids")

    start = time.perf_counter()
    table = model.get_input_embeddings()
    forced = torch.tensor(generated, dtype=torch.long, device=table.weight.device)
    embeds = torch.cat([prompt_embeds, table(forced).to(prompt_embeds.dtype)])
    prompt_len = prompt_embeds.shape[0]  # the forced ids are counted in `generated`
    cache = DynamicCache()
    out = model(inputs_embeds=embeds[None], cache=cache, use_cache=True, logits_to_keep=1)
    rows = out.logits[0, -1:]
    proposal: list[int] = []
    prefill_seconds = time.perf_counter() - start

    start = time.perf_counter()
    cursor, eos = 0, False
    while True:
        # rows[j] predicts the token after proposal[:j]; the first disagreement is the bonus token.
        for j, row in enumerate(rows):
            token = int(process_logits(row, generated, config).argmax())
            if token == eos_token_id:
                eos = True
                break
            generated.append(token)
            new.append(token)
            if j == len(proposal) or token != proposal[j]:
                break
            accepted += 1
        if eos or len(new) >= config.max_new_tokens:
            break
        # The cache must hold prompt + generated ids but the last, which is this step's first input.
        surplus = cache.get_seq_length() - (prompt_len + len(generated) - 1)
        if surplus > 0:
            cache.crop(-surplus)  # negative = tokens to remove, in old and new transformers alike
        # m proposals can yield m+1 tokens: leave room for the bonus within max_new_tokens.
        room = min(config.lookup_tokens, config.max_new_tokens - len(new) - 1)
        proposal, cursor = lookup(generated, draft, config.lookup_ngram, room, cursor)
        proposed += len(proposal)
        step = torch.tensor([[generated[-1], *proposal]], dtype=torch.long, device=forced.device)
        rows = model(input_ids=step, cache=cache, use_cache=True).logits[0]
        forwards += 1
    seconds = time.perf_counter() - start
    return DecodeResult(new, eos, forwards, proposed, accepted, prefill_seconds, seconds)
