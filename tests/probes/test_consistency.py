"""The consistency probes on toy models small enough to reason about by hand."""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from harness.backends import PreparedModel, Variant
from harness.probes.consistency import (
    Judgement,
    ProbedModel,
    compare_and_judge,
    exact_reason,
    probe_batch,
    probe_causality,
    probe_determinism,
    probe_padding,
)
from harness.probes.rows import token_layout
from harness.tolerances import Tolerance, tolerance_for


class PrefixSum(torch.nn.Module):
    """Logits at position t are the sum of embeddings up to t: a causal model with named parts."""

    def __init__(self, leak_into: int | None = None, ignore_mask: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(32, 8)
        self.embed.weight.data = torch.randn(32, 8, generator=generator)
        self.mix = torch.nn.Identity()
        self.head = torch.nn.Linear(8, 32, bias=False)
        self.head.weight.data = torch.randn(32, 8, generator=generator)
        self.leak_into = leak_into
        self.ignore_mask = ignore_mask

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        hidden = self.embed(input_ids)
        if attention_mask is not None and not self.ignore_mask:
            hidden = hidden * attention_mask.unsqueeze(-1)
        hidden = self.mix(torch.cumsum(hidden, dim=1))
        if self.leak_into is not None and hidden.shape[1] > self.leak_into + 1:
            hidden = hidden.clone()
            hidden[:, self.leak_into] += hidden[:, self.leak_into + 1]
        return transformers.modeling_outputs.CausalLMOutput(logits=self.head(hidden))


def probed(module: torch.nn.Module) -> ProbedModel:
    prepared = PreparedModel(variant=Variant("eager", "fp32"), module=module, device="cpu", prepare_seconds=0.0)
    return ProbedModel(prepared, transformers.PretrainedConfig(vocab_size=32, pad_token_id=0))


def batch(rows: int = 2, length: int = 6) -> dict:
    ids = torch.arange(rows * length).reshape(rows, length) % 24 + 8
    return {"input_ids": ids, "attention_mask": torch.ones(rows, length, dtype=torch.long)}


EXACT = Judgement(Tolerance(atol=1e-6, rtol=1e-5), "fp32", exact="test")
TOLERANT = Judgement(Tolerance(atol=1e-6, rtol=1e-5), "fp32")


def test_exact_reason_for_fp32_eager_causality():
    dense = Variant("eager", "fp32", (("attn", "eager"),))

    assert exact_reason("causality", dense, "eager", "cpu") is not None
    assert exact_reason("causality", dense, "eager", "cuda") is None
    assert exact_reason("causality", Variant("eager", "bf16", (("attn", "eager"),)), "eager", "cpu") is None
    assert exact_reason("padding", dense, "eager", "cpu") is None


def test_exact_reason_spares_grouping_experts():
    for experts, exact in (("eager", False), ("grouped_mm", False), ("batched_mm", True)):
        variant = Variant("eager", "fp32", (("attn", "sdpa"), ("experts", experts)))

        assert (exact_reason("causality", variant, "eager", "cpu") is not None) is exact


def test_exact_reason_for_determinism_on_any_backend():
    assert exact_reason("determinism", Variant("compiled", "fp32"), "compiled", "cpu") is not None
    assert exact_reason("determinism", Variant("compiled", "fp32"), "compiled", "cuda") is None


def test_judgement_drops_top1_limit_only():
    table = tolerance_for("eager", "bf16", "llama-tiny")
    judgement = Judgement.from_table(table, "bf16", None)

    assert table.min_top1 is not None
    assert judgement.tolerance.min_top1 is None
    assert judgement.tolerance.rtol == table.rtol
    assert judgement.tolerance.max_kl == table.max_kl


def test_compare_and_judge_exact_fails_on_rounding():
    reference = torch.ones(1, 2, 4)
    outcome = compare_and_judge(reference + 1e-7, reference, EXACT)

    assert not outcome.passed
    assert outcome.verdict.margin == -math.inf
    assert "not bitwise equal" in outcome.verdict.failures[0]
    assert compare_and_judge(reference + 1e-7, reference, TOLERANT).passed


def test_causality_passes_for_causal_model():
    model = probed(PrefixSum())
    tensors = batch()
    outcome = probe_causality(model, tensors, token_layout(tensors), EXACT, row=1, position=3, token=9)

    assert outcome.passed
    assert outcome.bitwise
    assert outcome.metrics["edit_moved_own_position"] is True


def test_causality_names_leaked_position_and_module():
    model = probed(PrefixSum(leak_into=2))
    tensors = batch()
    outcome = probe_causality(model, tensors, token_layout(tensors), EXACT, row=0, position=3, token=9)

    assert not outcome.passed
    assert "changed the output at position 2, before it" in outcome.problem
    assert outcome.metrics["leaked_into_position"] == 2
    assert outcome.culprit is not None
    assert outcome.culprit.module == "head"


def test_causality_rejects_position_without_real_token_before():
    model = probed(PrefixSum())
    tensors = batch()
    tensors["attention_mask"][0, :3] = 0

    with pytest.raises(ValueError, match="row 0 has no real token before position 3"):
        probe_causality(model, tensors, token_layout(tensors), EXACT, row=0, position=3, token=9)


def test_padding_passes_when_mask_zeroes_padding():
    model = probed(PrefixSum())
    tensors = batch()
    tensors["attention_mask"][0, :2] = 0
    outcome = probe_padding(model, tensors, token_layout(tensors), TOLERANT)

    assert outcome.passed
    assert outcome.metrics["position_ids"] == "from attention mask"


def test_padding_fails_when_padding_leaks():
    model = probed(PrefixSum(ignore_mask=True))
    tensors = batch()
    tensors["attention_mask"][0, :2] = 0
    outcome = probe_padding(model, tensors, token_layout(tensors), TOLERANT)

    assert not outcome.passed
    assert outcome.problem == "the padded row's outputs differ from the same row run alone"


def test_batch_passes_for_row_independent_model():
    model = probed(PrefixSum())
    tensors = batch(rows=3)
    donor = {**tensors, "input_ids": (tensors["input_ids"] + 5) % 24 + 8}
    # A batch of one and a batch of three may use different matmul blockings, so the rows
    # agree within fp32 tolerance, not always bitwise.
    outcome = probe_batch(model, tensors, donor, token_layout(tensors), TOLERANT, row=1)

    assert outcome.passed


def test_determinism_notes_nondeterminism_within_tolerance():
    model = probed(PrefixSum())
    calls = {"count": 0}

    def jitter(module, args, output):
        calls["count"] += 1
        return output + calls["count"] * 1e-9

    model.module.mix.register_forward_hook(jitter)
    tensors = batch()
    outcome = probe_determinism(model, tensors, token_layout(tensors), TOLERANT, runs=3)

    assert outcome.passed
    assert not outcome.bitwise
    assert outcome.notes[0].startswith("nondeterministic within tolerance: 3 runs differ by up to")
