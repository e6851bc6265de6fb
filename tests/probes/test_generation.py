"""Comparing two greedy generations: equal tokens, near ties, real divergences."""

from __future__ import annotations

import torch

from harness.probes.consistency import Judgement
from harness.probes.generation import Generation, first_divergences, judge_generations
from harness.tolerances import Tolerance

JUDGEMENT = Judgement(Tolerance(atol=1e-3, rtol=0.0), "fp32")


def generation(tokens: list[list[int]], logits: torch.Tensor | None = None) -> Generation:
    tokens_tensor = torch.tensor(tokens)
    if logits is None:
        logits = torch.zeros(*tokens_tensor.shape, 8)
        logits.scatter_(2, tokens_tensor.unsqueeze(-1), 1.0)
    return Generation(tokens=tokens_tensor, logits=logits)


def test_equal_generations_pass():
    reference = generation([[1, 2, 3]])
    outcome = judge_generations(reference, generation([[1, 2, 3]]), JUDGEMENT, what="cached generation")

    assert outcome.passed
    assert outcome.metrics["tokens_equal"] is True
    assert outcome.metrics["agreeing_steps"] == 3


def test_near_tie_passes_with_note():
    logits = torch.zeros(1, 3, 8)
    logits[0, 0, 1] = 1.0
    logits[0, 1, 2] = 1.0
    logits[0, 1, 5] = 1.0 - 1e-4
    reference = generation([[1, 2, 3]], logits)
    candidate = generation([[1, 5, 4]])
    outcome = judge_generations(reference, candidate, JUDGEMENT, what="cached generation")

    assert outcome.passed
    assert outcome.metrics["agreeing_steps"] == 1
    assert "parted at a near tie" in outcome.notes[0]
    assert "row 0 step 1: token 5 instead of 2" in outcome.notes[0]


def test_real_divergence_fails_naming_step():
    reference = generation([[1, 2, 3], [4, 4, 4]])
    candidate = generation([[1, 2, 3], [4, 6, 4]])
    outcome = judge_generations(reference, candidate, JUDGEMENT, what="cached generation")

    assert not outcome.passed
    assert outcome.verdict.limiting == "tokens"
    assert "cached generation picked other tokens than the reference: row 1 step 1" in outcome.problem
    assert "not a tie" in outcome.problem


def test_early_stop_counts_as_divergence():
    comparison = first_divergences(generation([[1, 2, 3]]), generation([[1, 2]]), JUDGEMENT)

    assert len(comparison.divergences) == 1
    assert comparison.divergences[0].step == 2
    assert not comparison.divergences[0].near_tie
