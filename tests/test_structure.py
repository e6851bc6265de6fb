"""Library structure checks: the layout rules, and planted classes that break them."""

from __future__ import annotations

import torch
import transformers

from harness.structure import (
    AUDIO_LANGUAGE,
    VISION_LANGUAGE,
    build_on_meta,
    language_model_head,
    language_model_kind,
    structure_findings,
)


class Base(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Linear(4, 4)


class BaseWithHead(Base):
    def __init__(self) -> None:
        super().__init__()
        self.lm_head = torch.nn.Linear(4, 8)


class Generation(torch.nn.Module):
    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.model = base
        self.lm_head = torch.nn.Linear(4, 8)


class FlatGeneration(torch.nn.Module):
    """Rebuilds the base model's modules itself instead of wrapping the base class."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Linear(4, 4)
        self.lm_head = torch.nn.Linear(4, 8)


def test_standard_layout_has_no_findings():
    assert structure_findings(Base(), Generation(Base())) == []


def test_head_on_base_model_is_found_and_named():
    findings = structure_findings(BaseWithHead(), Generation(BaseWithHead()))

    assert [finding.rule for finding in findings] == ["base model has no LM head"]
    assert "BaseWithHead (AutoModel) carries a language-model head at 'lm_head'" in findings[0].detail


def test_unwrapped_base_is_found():
    findings = structure_findings(Base(), FlatGeneration())

    assert [finding.rule for finding in findings] == ["generation class wraps the base model"]
    assert "FlatGeneration has no child of class Base" in findings[0].detail


def test_kinds_of_language_models():
    assert language_model_kind("llava") == VISION_LANGUAGE
    assert language_model_kind("qwen2_audio") == AUDIO_LANGUAGE
    assert language_model_kind("llama") is None
    assert language_model_kind("whisper") is None


def test_llava_follows_the_layout_on_the_meta_device():
    config = transformers.LlavaConfig()
    base = build_on_meta(transformers.LlavaModel, config)
    generation = build_on_meta(transformers.LlavaForConditionalGeneration, config)

    assert language_model_head(base) is None
    assert language_model_head(generation) == "lm_head"
    assert structure_findings(base, generation) == []


class LlavaModelWithHead(transformers.LlavaModel):
    """A planted base class that carries its own LM head."""

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)


def test_structure_suite_fails_and_names_the_planted_head(run_suites, monkeypatch):
    monkeypatch.setattr(transformers, "LlavaModel", LlavaModelWithHead)
    run = run_suites("--cases", "auto:llava", suites=("test_library_structure.py",))
    result = run.result(
        suite="library_structure", check=run.results["check"][run.results["check"].str.contains("layout")].iloc[0]
    )

    assert result["status"] == "fail"
    assert "LlavaModelWithHead (AutoModel) carries a language-model head at 'lm_head'" in result["message"]
    assert "LlavaForConditionalGeneration has no child of class LlavaModelWithHead" in result["message"]
