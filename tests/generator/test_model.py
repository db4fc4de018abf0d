"""ReportGenerator on a tiny real Llama: fusion gate, LoRA training step, generation, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgreport.generator.decoding import DecodingConfig
from kgreport.generator.fusion import DynamicFusion, FusionConfig
from kgreport.generator.llm import LLMLoadError, load_llm
from kgreport.generator.model import Batch, GeneratorConfig, ReportGenerator

TARGET = "Findings: Large right pleural effusion.\nImpression: Pleural effusion."


def _batch(n_cases: int = 3, *, with_target: bool = True) -> Batch:
    torch.manual_seed(1)
    mask = torch.zeros(1, 3, dtype=torch.bool)
    mask[0, :n_cases] = True
    return Batch(
        image=torch.randn(1, 32),
        texts=torch.randn(1, 3, 16),
        mask=mask,
        prompts=["Similar prior cases:\n[MPX1] (CT, Thorax, 0.91) Right pleural effusion.\nWrite the report."],
        targets=[TARGET] if with_target else None,
    )


def _config(llm: Path) -> GeneratorConfig:
    return GeneratorConfig(llm=str(llm), fusion=FusionConfig(image_dim=32, text_dim=16, soft_tokens=2, hidden=16))


def test_fusion_gate_is_per_case_and_falls_back_to_the_image() -> None:
    fusion = DynamicFusion(FusionConfig(image_dim=8, text_dim=4, llm_dim=12, soft_tokens=3, hidden=6))
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    out = fusion(torch.randn(3, 8), torch.randn(3, 2, 4), mask)
    assert out.tokens.shape == (3, 3, 12) and out.gate.shape == (3,)
    assert torch.all((out.gate[:2] > 0) & (out.gate[:2] < 1)) and out.gate[0] != out.gate[1]
    assert out.gate[2] == 1.0, "no retrieved report: the image carries everything"
    pinned = fusion(torch.randn(3, 8), torch.randn(3, 2, 4), mask, fixed_gate=0.5)
    assert pinned.gate.tolist() == [0.5, 0.5, 1.0]
    assert torch.isfinite(out.tokens).all()


def test_missing_llm_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LLMLoadError, match="not a .gguf file or a model folder"):
        load_llm(tmp_path / "nowhere", tmp_path)


@pytest.mark.slow
def test_training_steps_fit_a_report_and_save_load_round_trips(tiny_llm: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = ReportGenerator.create(_config(tiny_llm), tmp_path / "cache")
    trainable = {n for n, p in generator.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("fusion.") for n in trainable), "base LLM stays frozen"
    optimiser = torch.optim.AdamW(generator.trainable_parameters(), lr=1e-2)
    generator.train()
    first, _ = generator.loss(_batch())
    for _ in range(30):
        loss, gate = generator.loss(_batch())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < first.item() * 0.5, f"loss {first.item():.2f} -> {loss.item():.2f}"
    assert 0 < gate.item() < 1
    generator.eval()
    texts, gates = generator.generate(_batch(with_target=False), DecodingConfig(max_new_tokens=12), prefix="Findings:")[
        :2
    ]
    assert texts[0].startswith("Findings:") and len(texts[0]) > len("Findings:")
    empty_texts, empty_gates = generator.generate(_batch(0, with_target=False), DecodingConfig(max_new_tokens=4))[:2]
    assert empty_gates == [1.0] and isinstance(empty_texts[0], str)

    generator.save(tmp_path / "trained")
    loaded = ReportGenerator.load(tmp_path / "trained", tmp_path / "cache")
    again, again_gates = loaded.generate(
        _batch(with_target=False), DecodingConfig(max_new_tokens=12), prefix="Findings:"
    )[:2]
    assert again == texts and again_gates == pytest.approx(gates)
    with torch.no_grad():
        assert loaded.loss(_batch())[0].item() == pytest.approx(generator.loss(_batch())[0].item(), rel=1e-4)


@pytest.mark.slow
def test_packaged_smollm2_is_converted_once_and_cached(tmp_path: Path) -> None:
    from kgreport.generator.llm import resolve_llm

    model, tokenizer = load_llm(None, tmp_path)
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    folder = resolve_llm(None, tmp_path)
    assert (folder / "model.safetensors").is_file() and folder.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [folder.name], "no half-written conversion left behind"
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name one imaging finding of the lung."}], add_generation_prompt=True
    )
    assert len(ids["input_ids"] if hasattr(ids, "keys") else ids) > 5


@pytest.mark.slow
def test_wrapping_in_peft_prints_no_deprecation_notice(tiny_llm: Path, tmp_path: Path) -> None:
    """peft's probe of `is_gradient_checkpointing` warned on every load (transformers 5 deprecates it)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generator = ReportGenerator.create(_config(tiny_llm), tmp_path / "cache")
        generator.save(tmp_path / "writer")
        ReportGenerator.load(tmp_path / "writer", tmp_path / "cache")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
