"""Greedy generation through ``generate``, and the comparison of two generations token by token.

Two greedy generations of the same model must pick the same tokens. Where they part, the
reference's logits at that step tell whether the two tokens were a near tie: a logit gap
within the tolerance is rounding deciding between equals, anything larger is a bug.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.backends import PreparedModel
from harness.inputs import ModelInputs, pad_token_id_of
from harness.probes.consistency import Judgement, ProbeOutcome, compare_and_judge
from harness.tolerances import Verdict


@dataclass
class Generation:
    """The tokens a greedy generation added after the prompt, and the raw logits of each step."""

    tokens: torch.Tensor
    logits: torch.Tensor | None


def greedy_generate(
    prepared: PreparedModel,
    tensors: dict[str, Any],
    max_new_tokens: int,
    *,
    suppressed: Iterable[int] = (),
    **options: Any,
) -> Generation:
    """Generate ``max_new_tokens`` greedily with the prepared model's ``generate``.

    ``suppressed`` token ids are never generated. The probes pass the special tokens: a
    random-weight model that emits an image placeholder breaks the next step (it has no
    pixels), and one that emits EOS ends a row early.

    ``disable_compile`` is always set: on CUDA, ``generate`` compiles the forward by itself
    when the cache is static, which would turn an eager variant into a compiled one. The
    backend decides compilation, not the probe.
    """
    module = prepared.module
    inputs = ModelInputs(tensors).to(prepared.device, prepared.variant.torch_dtype)
    prompt_key = "decoder_input_ids" if "decoder_input_ids" in inputs else "input_ids"
    settings = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "return_dict_in_generate": True,
        "output_logits": True,
        "disable_compile": True,
        "pad_token_id": pad_token_id_of(module.config),
        **options,
    }
    if suppressed:
        settings["suppress_tokens"] = sorted(suppressed)
    with torch.inference_mode():
        result = module.generate(**inputs, **settings)
    # Sequences start with the prompt: input_ids for decoder-only models, decoder_input_ids for encoder-decoder ones.
    prompt_length = inputs[prompt_key].shape[1] if prompt_key in inputs else 0
    tokens = result.sequences[:, prompt_length:].detach().cpu()
    logits = torch.stack(result.logits, dim=1).detach().cpu() if result.logits else None
    return Generation(tokens=tokens, logits=logits)


@dataclass
class TokenDivergence:
    """The first step at which two generations pick different tokens in one row, with the logit gap there."""

    row: int
    step: int
    reference_token: int
    candidate_token: int
    logit_gap: float
    allowed_gap: float

    @property
    def near_tie(self) -> bool:
        return self.logit_gap <= self.allowed_gap

    def describe(self) -> str:
        kind = "a near tie" if self.near_tie else "not a tie"
        return (
            f"row {self.row} step {self.step}: token {self.candidate_token} instead of {self.reference_token}, "
            f"{kind} (reference logit gap {self.logit_gap:.3g}, allowed {self.allowed_gap:.3g})"
        )


@dataclass
class GenerationComparison:
    divergences: list[TokenDivergence] = field(default_factory=list)
    agreeing_steps: int = 0


def first_divergences(reference: Generation, candidate: Generation, judgement: Judgement) -> GenerationComparison:
    """Find, per row, the first step where the candidate picks another token than the reference."""
    steps = min(reference.tokens.shape[1], candidate.tokens.shape[1])
    divergences = []
    for row in range(reference.tokens.shape[0]):
        ref_row = reference.tokens[row]
        cand_row = candidate.tokens[row]
        differing = torch.nonzero(ref_row[:steps] != cand_row[:steps]).flatten().tolist()
        if not differing and ref_row.shape[0] == cand_row.shape[0]:
            continue
        step = differing[0] if differing else steps
        if step >= steps:
            # One generation stopped early (EOS in every row) where the other went on.
            divergences.append(TokenDivergence(row, step, -1, -1, float("inf"), 0.0))
            continue
        divergences.append(_token_divergence(reference, row, step, int(cand_row[step]), judgement))
    agreeing = min([item.step for item in divergences], default=steps)
    return GenerationComparison(divergences=divergences, agreeing_steps=agreeing)


def _token_divergence(
    reference: Generation, row: int, step: int, candidate_token: int, judgement: Judgement
) -> TokenDivergence:
    reference_token = int(reference.tokens[row, step])
    if reference.logits is None:
        return TokenDivergence(row, step, reference_token, candidate_token, float("inf"), 0.0)
    logits = reference.logits[row, step].double()
    gap = float(logits[reference_token] - logits[candidate_token])
    if judgement.exact:
        allowed = 0.0
    else:
        tolerance = judgement.tolerance
        allowed = (tolerance.atol or 0.0) + (tolerance.rtol or 0.0) * float(logits.abs().max())
    return TokenDivergence(row, step, reference_token, candidate_token, gap, allowed)


def judge_generations(reference: Generation, candidate: Generation, judgement: Judgement, *, what: str) -> ProbeOutcome:
    """Require the same tokens, a near tie excepted, and logits within tolerance while the tokens agree.

    ``what`` names the candidate in the failure message ("generation with a static cache").
    """
    comparison = first_divergences(reference, candidate, judgement)
    steps = comparison.agreeing_steps
    if steps > 0 and reference.logits is not None and candidate.logits is not None:
        outcome = compare_and_judge(
            candidate.logits[:, :steps], reference.logits[:, :steps], judgement, vocabulary=True
        )
    else:
        outcome = ProbeOutcome(verdict=Verdict(passed=True, margin=1.0, limiting=""))
    outcome.metrics["agreeing_steps"] = steps
    outcome.metrics["new_tokens"] = int(reference.tokens.shape[1])
    outcome.metrics["tokens_equal"] = not comparison.divergences

    real = [item for item in comparison.divergences if not item.near_tie]
    ties = [item for item in comparison.divergences if item.near_tie]
    for item in ties:
        outcome.notes.append(f"{what} parted at a near tie, tokens compared up to it: {item.describe()}")
    if real:
        first = real[0]
        used = first.logit_gap / first.allowed_gap if first.allowed_gap > 0 else math.inf
        outcome.verdict = Verdict(
            passed=False,
            margin=min(outcome.verdict.margin, 1.0 - used),
            limiting="tokens",
            failures=[*outcome.verdict.failures],
            usage=outcome.verdict.usage,
        )
        outcome.problem = f"{what} picked other tokens than the reference: {real[0].describe()}"
    elif not outcome.passed:
        outcome.problem = f"{what} gave the same tokens but its logits left tolerance"
    return outcome
